"""Per-step training step, M size: fastrnn's LSTMTagger against PyTorch and Keras.

    python bench/per_step.py                 # 2 threads, 7 rounds
    python bench/per_step.py --rounds 5 --iters 10 --no-keras

One training step of a per-step classifier (a label at every step): batch 64, 100
steps, 32 input features, LSTM with 128 hidden units, a Dense head on every step to 10
classes, softmax cross-entropy over all valid steps, backward, gradient clipping at
global norm 1.0, Adam (lr 1e-3). Contenders, each in its own worker process (two OpenMP
runtimes in one process make each other's idle threads spin), the rounds interleaved:

  tagger  fastrnn LSTMTagger, fitted once (max_epochs=1) to build it, then driven through
          its internals exactly as fit's _run_batches does: model_.forward, _loss,
          model_.backward, clip_grad_norm, _optimizer.step, on one fixed batch;
  m2o     fastrnn LSTMClassifier of the same size (one label per sequence, 10 classes),
          driven the same way: the many-to-one step the tagger is compared with;
  torch   nn.LSTM(batch_first=True) + nn.Linear on every step + cross_entropy + Adam +
          clip_grad_norm_ (torch.set_flush_denormal(True), see bench/README.md);
  keras   LSTM(return_sequences=True) + Dense, sparse categorical cross-entropy (from
          logits), Adam(global_clipnorm=1.0), a compiled train_on_batch (when TensorFlow
          imports).

A second configuration, "ragged", gives the 64 sequences lengths drawn uniformly from
50-100 (padded to 100): fastrnn's tagger (lengths passed, the loss over valid steps
only) against PyTorch on pack_padded_sequence(enforce_sorted=False) with the head on the
packed rows.

Each round every contender times --iters steps and keeps their median; the table gives
the median over the rounds. The fastrnn workers also time the five pieces of their step
(forward, loss, backward, clipping, optimizer) and print their medians.
"""
import argparse
import os
import platform
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fastrnn._quickbench import _Worker  # noqa: E402

B, T, I, H, C = 64, 100, 32, 128, 10
LR = 1e-3
CLIP = 1.0
RAGGED = (50, 100)      # lengths drawn uniformly from this range (inclusive)
PIECES = ("forward", "loss", "backward", "clip", "optimizer")


def make_data(config):
    """X (B, T, I) float32, lengths (B,), per-step labels (B, T) and per-sequence labels
    (B,): the same in every worker."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(B, T, I)).astype(np.float32)
    y_steps = rng.integers(0, C, size=(B, T))
    y_seq = np.arange(B) % C           # every class present
    if config == "ragged":
        lengths = rng.integers(RAGGED[0], RAGGED[1] + 1, size=B)
    else:
        lengths = np.full(B, T)
    return X, lengths.astype(np.int64), y_steps, y_seq


# ------------------------------------------------------------------ fastrnn

def _fastrnn_step(kind, config):
    """A training step of a fitted estimator on one fixed batch, as _run_batches runs it;
    returns step() -> dict of piece times."""
    from fastrnn import LSTMClassifier, LSTMTagger
    from fastrnn.estimators._training import TrainingData
    from fastrnn.optim import clip_grad_norm
    X, lengths, y_steps, y_seq = make_data(config)
    cls = LSTMTagger if kind == "tagger" else LSTMClassifier
    est = cls(hidden_size=H, batch_size=B, max_epochs=1, learning_rate=LR,
              clip_grad_norm=CLIP, shuffle=False, random_state=0, scale_inputs=False)
    if config == "ragged":
        Xf = [X[i, :lengths[i]] for i in range(B)]
        yf = [y_steps[i, :lengths[i]] for i in range(B)] if kind == "tagger" else y_seq
    else:
        Xf, yf = X, (y_steps if kind == "tagger" else y_seq)
    est.fit(Xf, yf)
    # the fixed batch, built by the estimator's own input path (what fit feeds the steps)
    seqs = est._transform_inputs(est._read_X_predict(Xf))
    Y = np.searchsorted(est.classes_, est._target_rows(yf, seqs)).astype(np.int32)
    sw = np.ones(len(seqs), dtype=np.float32)
    data = TrainingData(seqs, Y, sw, est._per_step)
    xb, lb, yb, wb = data.batch(np.arange(B))
    params = est.model_.params()
    model, opt = est.model_, est._optimizer

    def step():
        nt = est._n_threads()
        t0 = time.perf_counter()
        out = model.forward(xb, lb, True, nt)
        t1 = time.perf_counter()
        loss, d = est._loss(out, yb, wb, nt)
        t2 = time.perf_counter()
        grads = est._backward_batch(d, nt)
        t3 = time.perf_counter()
        clip_grad_norm(grads, CLIP)
        t4 = time.perf_counter()
        opt.step(params, grads)
        t5 = time.perf_counter()
        return dict(zip(PIECES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)))

    return step


# ------------------------------------------------------------------ PyTorch

def _torch_step(config):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(0)
    X, lengths, y_steps, _ = make_data(config)
    rnn = torch.nn.LSTM(I, H, batch_first=True)
    head = torch.nn.Linear(H, C)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=LR)
    x = torch.from_numpy(X)
    y = torch.from_numpy(y_steps)
    F = torch.nn.functional
    if config == "ragged":
        lens = torch.from_numpy(lengths)
        # the targets in packed order (data preparation, like fastrnn's batch rows)
        y_packed = pack_padded_sequence(y, lens, batch_first=True, enforce_sorted=False).data

        def step():
            opt.zero_grad()
            packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
            out, _ = rnn(packed)
            F.cross_entropy(head(out.data), y_packed).backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
    else:
        y_flat = y.reshape(-1)

        def step():
            opt.zero_grad()
            out, _ = rnn(x)
            F.cross_entropy(head(out).reshape(-1, C), y_flat).backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
    return step


# ------------------------------------------------------------------ Keras

def _keras_step(config):
    import tensorflow as tf
    if config != "full":
        return None
    tf.keras.utils.set_random_seed(0)
    X, _, y_steps, _ = make_data(config)
    inp = tf.keras.Input((T, I), batch_size=B)
    z = tf.keras.layers.LSTM(H, return_sequences=True)(inp)
    out = tf.keras.layers.Dense(C)(z)
    model = tf.keras.Model(inp, out)
    model.compile(optimizer=tf.keras.optimizers.Adam(LR, global_clipnorm=CLIP),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    Xt = tf.constant(X)
    yt = tf.constant(y_steps.astype(np.int32))

    def step():
        model.train_on_batch(Xt, yt)
    return step


# ------------------------------------------------------------------ workers

def _worker(name, threads, conn):
    if name == "keras":
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        build = _keras_step
    elif name == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        build = _torch_step
    else:
        import fastrnn
        fastrnn.set_num_threads(threads)

        def build(config):
            return _fastrnn_step(name, config)
    built = {}
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        config, iters = msg
        if config not in built:
            built[config] = build(config)
            if built[config] is not None:
                for _ in range(3):                   # warm-up: allocation, tracing
                    built[config]()
        fn = built[config]
        if fn is None:
            conn.send(None)
            continue
        times, pieces = [], []
        for _ in range(iters):
            t0 = time.perf_counter()
            p = fn()
            times.append(time.perf_counter() - t0)
            if p:
                pieces.append(p)
        conn.send((times, pieces))


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numpy
    vers = [f"Python {platform.python_version()}", f"numpy {numpy.__version__}"]
    from importlib import metadata
    for dist in ("fastrnn", "torch", "tensorflow-cpu", "keras"):
        try:
            vers.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return f"# {os.cpu_count()} CPUs ({cpu}), {platform.system()}, " + ", ".join(vers)


def keras_available():
    import importlib.util
    if importlib.util.find_spec("tensorflow") is None:
        return False
    try:
        import subprocess
        subprocess.run([sys.executable, "-c", "import tensorflow"], check=True,
                       capture_output=True, timeout=120)
        return True
    except Exception:
        return False


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10, help="steps timed per round")
    ap.add_argument("--pause", type=float, default=0.2,
                    help="seconds between contenders (idle OpenMP/Eigen threads spin)")
    ap.add_argument("--no-keras", action="store_true")
    ap.add_argument("--configs", nargs="+", default=["full", "ragged"],
                    choices=["full", "ragged"])
    args = ap.parse_args(argv)
    print(machine_line())
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# batch {B}, {T} steps, {I} features, LSTM hidden {H}, {C} classes per step; "
          f"{args.threads} threads; {args.rounds} rounds x {args.iters} steps, medians",
          flush=True)
    names = ["tagger", "m2o", "torch"]
    if not args.no_keras:
        if keras_available():
            names.append("keras")
        else:
            print("# keras: tensorflow does not import, skipped")
    workers = {n: _Worker(_worker, (n, args.threads), args.threads, n) for n in names}
    results = {}
    try:
        for config in args.configs:
            active = [n for n in names if not (config == "ragged" and n in ("m2o", "keras"))]
            samples = {n: [] for n in active}
            pieces = {n: [] for n in active}
            for _ in range(args.rounds):
                for n in active:
                    r = workers[n].ask((config, args.iters))
                    if r is None:
                        continue
                    ts, ps = r
                    samples[n].append(float(np.median(ts)))
                    pieces[n].extend(ps)
                    time.sleep(args.pause)
            med = {n: float(np.median(s)) for n, s in samples.items() if s}
            results[config] = med
            print(f"\n## {config}: " + ("all 100 steps" if config == "full" else
                  f"lengths uniform {RAGGED[0]}-{RAGGED[1]} (torch: packed sequences)"))
            print("contender | ms per step | rounds (min-max ms)")
            for n in med:
                s = samples[n]
                print(f"{n} | {med[n] * 1e3:.2f} | {min(s) * 1e3:.2f}-{max(s) * 1e3:.2f}")
            t = med["tagger"]
            print(f"torch / tagger = {med['torch'] / t:.2f}x (target >= 1.5)")
            if "m2o" in med:
                print(f"tagger / many-to-one = {t / med['m2o']:.2f} (target <= 1.25)")
            if "keras" in med:
                print(f"keras / tagger = {med['keras'] / t:.2f}x")
            for n in ("tagger", "m2o"):
                if pieces.get(n):
                    row = {k: float(np.median([p[k] for p in pieces[n]])) for k in PIECES}
                    print(f"{n} pieces (median ms): " + ", ".join(
                        f"{k} {v * 1e3:.2f}" for k, v in row.items())
                        + f"; sum {sum(row.values()) * 1e3:.2f}")
            sys.stdout.flush()
    finally:
        for w in workers.values():
            w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
