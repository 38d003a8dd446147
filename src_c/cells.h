/* cells.h — the per-sample step functions of each cell (template, see instantiate.h).
   Included once per real type; defined in lstm.c, gru.c and rnn.c, driven by
   recurrence.c. Each works on ONE sample's row of one step; H = hidden units.

   forward:  xp (GH)  input projection W_ih x_t (bias not added), or NULL (LSTM/RNN) when
                      a already includes it
             a  (GH)  recurrent product W_hh h_{t-1} (bias not added); used as scratch
             h, c (H) state, updated in place (c: LSTM only)
             store (S) values kept for backward, or NULL (inference)
   backward: store (S), h_prev, c_prev, c_t, h_t (H) from the forward cache
             dh (H)   in: dL/dh_t (all paths); out: the part of dL/dh_{t-1} that does NOT
                      flow through W_hh (GRU: dh*z; LSTM/RNN: 0)
             dc (H)   LSTM: in dL/dc_t, out dL/dc_{t-1}
             dgh (GH) gradient of the recurrent pre-activation (W_hh h + b_hh)
             dgi (GH) gradient of the input pre-activation (W_ih x + b_ih); may equal dgh
                      for LSTM/RNN, where the two coincide */
void FR(lstm_step_forward)(int H, const real *xp, real *a, const real *b_ih,
                           const real *b_hh, real *h, real *c, real *store);
void FR(lstm_step_backward)(int H, const real *restrict store, const real *restrict c_prev,
                            const real *c_t, real *restrict dh, real *restrict dc,
                            real *dgh, real *dgi);
void FR(gru_step_forward)(int H, const real *xp, real *a, const real *b_ih,
                          const real *b_hh, real *h, real *store);
void FR(gru_step_backward)(int H, const real *store, const real *h_prev,
                           real *dh, real *dgh, real *dgi);
void FR(rnn_step_forward)(int H, int relu, const real *xp, real *a, const real *b_ih,
                          const real *b_hh, real *h);
void FR(rnn_step_backward)(int H, int relu, const real *h_t, real *dh, real *dgh, real *dgi);
