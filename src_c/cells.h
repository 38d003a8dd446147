/* cells.h — the step functions of each cell (template, see instantiate.h).
   Included once per real type; defined in lstm.c, gru.c and rnn.c, driven by
   recurrence.c. Each processes n rows (samples) of one step in one call; rows are
   contiguous with the strides given (GH = gates * H, S = stored values per row).

   forward:  xp (n, GH)  input projection W_ih x_t (bias not added), or NULL (LSTM/RNN)
                         when a already includes it
             a  (n, GH)  recurrent product W_hh h_{t-1} (bias not added); used as scratch
             h  (n, ldh) state, updated in place; c (n, H) cell state (LSTM)
             store (n, S) values kept for backward, or NULL (inference)
             h_keep, c_keep (n, H) copies of the new h and c (training: rows of h_all /
                         c_all), or NULL
   backward: store (n, S), h_prev, c_prev, c_t, h_t (n, H) from the forward cache
             dh (n, H)   in: dL/dh_t (all paths); out: the part of dL/dh_{t-1} that does NOT
                         flow through W_hh (GRU: dh*z; LSTM/RNN: 0)
             dc (n, H)   LSTM: in dL/dc_t, out dL/dc_{t-1}
             dgh (n, GH) gradient of the recurrent pre-activation (W_hh h + b_hh); for LSTM
                         and RNN also that of the input pre-activation (W_ih x + b_ih)
             dgi_rows    GRU: n row pointers for the gradient of the input pre-activation,
                         which differs from dgh in the n gate */
void FR(lstm_rows_forward)(int n, int H, const real *xp, real *a, const real *b_ih,
                           const real *b_hh, real *h, int ldh, real *c, real *store,
                           real *h_keep, real *c_keep);
void FR(lstm_rows_backward)(int n, int H, const real *store, const real *c_prev,
                            const real *c_t, real *dh, real *dc, real *dgh);
void FR(gru_rows_forward)(int n, int H, const real *xp, real *a, const real *b_ih,
                          const real *b_hh, real *h, int ldh, real *store, real *h_keep);
void FR(gru_rows_backward)(int n, int H, const real *store, const real *h_prev, real *dh,
                           real *dgh, real *const *dgi_rows);
void FR(rnn_rows_forward)(int n, int H, int relu, const real *xp, real *a, const real *b_ih,
                          const real *b_hh, real *h, int ldh, real *h_keep);
void FR(rnn_rows_backward)(int n, int H, int relu, const real *h_t, real *dh, real *dgh);
