/* optim.h — gradient clipping by global norm and one optimizer step over a list of
   dense parameter arrays, in one call (optim.c).

   The formulas are those of fastrnn/optim.py (which follow torch.optim), evaluated in
   the same order and in the arrays' own type, so the result is bitwise the one numpy
   gives for the Python formulas (IEEE +, -, *, /, sqrt; no FMA contraction: optim.c is
   compiled for baseline x86-64 only). */
#ifndef FASTRNN_OPTIM_H
#define FASTRNN_OPTIM_H
#include <stddef.h>
#include <stdint.h>

enum fr_optim_kind { FR_OPT_SGD = 0, FR_OPT_ADAM = 1, FR_OPT_ADAMW = 2, FR_OPT_RMSPROP = 3 };

/* Hyper-parameters shared by every array of a call. */
typedef struct {
    int kind;                 /* enum fr_optim_kind */
    int nesterov;             /* SGD */
    double lr, weight_decay;
    double momentum;          /* SGD, RMSprop (0: no momentum buffer) */
    double beta1, beta2;      /* Adam, AdamW */
    double alpha;             /* RMSprop: smoothing of the squared gradient */
    double eps;               /* Adam, AdamW, RMSprop */
} fr_optim_hyper;

/* One array of n elements. g is the gradient (scaled in place when clipping scales it).
   p NULL: the array only counts in the global norm and is scaled (a row-sparse
   gradient's values, updated by the caller). State arrays (n elements each, NULL when the
   optimizer keeps none):
     SGD      s1 = momentum buffer (when momentum > 0; first: it starts at this step's g)
     Adam(W)  s1 = exp_avg, s2 = exp_avg_sq; c1 = lr / (1 - beta1^t), c2 = sqrt(1 - beta2^t)
     RMSprop  s1 = square_avg, s2 = momentum buffer (when momentum > 0) */
typedef struct {
    void *p, *g, *s1, *s2;
    int64_t n;
    double c1, c2;
    int first;
} fr_optim_array;

/* Doubles of workspace a call over these arrays needs (one partial norm per block). */
size_t fr_optim_workspace(int n_arrays, const fr_optim_array *a);

/* Global norm and step. max_norm > 0: total = sqrt(sum of g^2 over every array), summed
   in double over fixed blocks in a fixed order (the same bits for any thread count);
   when total is finite and max_norm / (total + 1e-6) < 1 every g is multiplied by that
   coefficient first (torch.nn.utils.clip_grad_norm_). *total_norm receives total (-1
   when max_norm <= 0: not computed). Then every array with p != NULL takes one step.
   FR_EBADDIMS (nothing changed) for a bad kind, size or missing state array. */
int fr_optim_step_f32(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a,
                      double max_norm, int n_threads, double *ws, double *total_norm);
int fr_optim_step_f64(const fr_optim_hyper *h, int n_arrays, const fr_optim_array *a,
                      double max_norm, int n_threads, double *ws, double *total_norm);
#endif
