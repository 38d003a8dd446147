"""Per-call costs for comparing two builds of fastrnn (e.g. the full C API against the
Limited API / abi3): run it alternately with PYTHONPATH pointing at each build's folder.
Prints one JSON line: 1-step batch-1 call (us), stream step (us), B1 inference (ms), M
inference and training step (ms), medians."""
import time, numpy as np, sys, json
import fastrnn
from fastrnn.layers import LSTM
def med(f, n):
    ts=[]
    for _ in range(n):
        t0=time.perf_counter(); f(); ts.append(time.perf_counter()-t0)
    return float(np.median(ts))
rng=np.random.default_rng(0)
l=LSTM(32,128,random_state=0)
x1=rng.normal(size=(1,1,32)).astype(np.float32)
xb1=rng.normal(size=(1,100,32)).astype(np.float32)
xm=rng.normal(size=(64,100,32)).astype(np.float32)
s=l.stream(1); xs=rng.normal(size=(1,32)).astype(np.float32)
for _ in range(50): l.forward(x1); s.step(xs)
r={}
def one_step():
    for _ in range(1000): l.forward(x1)
def stream_steps():
    for _ in range(10000): s.step(xs)
r["call_1step_us"]=med(one_step, 7)*1e3
r["stream_step_us"]=med(stream_steps, 7)*1e2
r["B1_100_ms"]=med(lambda: l.forward(xb1), 50)*1e3
def train():
    o,_=l.forward(xm, training=True); l.backward(np.ones_like(o))
r["M_train_ms"]=med(train, 15)*1e3
r["M_infer_ms"]=med(lambda: l.forward(xm), 30)*1e3
print(json.dumps(r))
