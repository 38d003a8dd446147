/* embedding.c — the row-sparse gradient of an embedding table (template, see
   instantiate.h).

   Legend: B = batch, T = steps, E = embedding dim, V = vocabulary (table rows).
     ids (B,T) token ids; lengths (B) in [0,T]: positions t >= lengths[b] are padding
     d_out (B,T,E) the gradient of the looked-up rows
   Out: rows_out (count) the distinct ids at valid positions, in order of first
   appearance scanning b then t (skip_id, e.g. a padding index, left out; -1: none);
   values_out (count,E) the sum of d_out over each id's positions, in that scan order
   (deterministic). O(B*T*E) with an int scratch map of V entries from id to row of the
   output, -1 on entry and reset to -1 on exit by walking only the touched ids: no sort
   and no (V,E) array. An entry is trusted only when rows_out agrees with it, so a map
   that is not all -1 still gives the right result and never an access out of bounds.
   Single-threaded: the work is a copy of d_out. */
#ifndef FR_TEMPLATE
#define FR_TEMPLATE "embedding.c"
#include "instantiate.h"
#else

FR_CLONES static void FR(emb_add)(real *restrict acc, const real *restrict x, int len)
{
    for (int j = 0; j < len; j++) acc[j] += x[j];
}

/* returns FR_OK with *count set, or FR_EBADDIMS (bad sizes, a length outside [0,T], an
   id outside [0,V) at a valid position, or more distinct ids than `capacity` rows) */
int FR(fr_embedding_backward)(int B, int T, int E, int V, int skip_id, const int *ids,
                              const int *lengths, const real *d_out, int *map, int capacity,
                              int *rows_out, real *values_out, int *count)
{
    *count = 0;
    if (B < 0 || T < 0 || E < 1 || V < 1 || capacity < 0) return FR_EBADDIMS;
    for (int b = 0; b < B; b++) {
        if (lengths[b] < 0 || lengths[b] > T) return FR_EBADDIMS;
        for (int t = 0; t < lengths[b]; t++) {
            const int id = ids[(size_t)b * T + t];
            if (id < 0 || id >= V) return FR_EBADDIMS;
        }
    }
    int cnt = 0, rc = FR_OK;
    for (int b = 0; b < B && rc == FR_OK; b++)
        for (int t = 0; t < lengths[b]; t++) {
            const size_t pos = (size_t)b * T + t;
            const int id = ids[pos];
            if (id == skip_id) continue;
            const real *src = d_out + pos * E;
            const int r = map[id];
            if (r >= 0 && r < cnt && rows_out[r] == id) {
                FR(emb_add)(values_out + (size_t)r * E, src, E);
                continue;
            }
            if (cnt == capacity) { rc = FR_EBADDIMS; break; }
            map[id] = cnt;
            rows_out[cnt] = id;
            memcpy(values_out + (size_t)cnt * E, src, sizeof(real) * E);
            cnt++;
        }
    for (int i = 0; i < cnt; i++) map[rows_out[i]] = -1;
    *count = rc == FR_OK ? cnt : 0;
    return rc;
}

#endif /* template body */
