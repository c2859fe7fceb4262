# Multiply-accumulates of an ONNX model for one sample, computed independently of flowrt:
# every node output is made a graph output and ONNX Runtime runs the model at batch 1 (so
# every shape is a real one); Conv = output elements x prod(kernel dims after the first),
# Gemm / MatMul = output elements x K, Einsum = product of the sizes of all its indices.
# Usage: .venv-ort/bin/python exporter/cli/tests/onnx_macs.py MODEL.onnx
# (the numbers asserted in cli_inspect.rs).
import onnx, sys, numpy as np, onnxruntime as ort
m = onnx.load(sys.argv[1])
inits = {t.name: list(t.dims) for t in m.graph.initializer}
names = [o for n in m.graph.node for o in n.output if o]
del m.graph.output[:]
for o in names:
    m.graph.output.append(onnx.helper.make_empty_tensor_value_info(o))
s = ort.InferenceSession(m.SerializeToString(), providers=['CPUExecutionProvider'])
feeds = {}
for i in s.get_inputs():
    shp = [1 if not isinstance(d, int) else d for d in i.shape]
    dt = np.int64 if 'int64' in i.type else np.float32
    feeds[i.name] = (np.zeros(shp, dt) if dt == np.int64 else np.random.rand(*shp).astype(dt))
outs = s.run(None, feeds)
shapes = dict(inits)
shapes.update({n: list(o.shape) for n, o in zip(names, outs)})
for i in s.get_inputs(): shapes[i.name] = list(feeds[i.name].shape)
macs = {}
for n in m.graph.node:
    out = int(np.prod(shapes[n.output[0]])) if n.op_type in ('Conv','Gemm','MatMul','Einsum') else 0
    if n.op_type == 'Conv':
        v = out * int(np.prod(shapes[n.input[1]][1:]))
    elif n.op_type == 'Gemm':
        a = shapes[n.input[0]]; tA = [x.i for x in n.attribute if x.name == 'transA']
        v = out * (a[0] if tA and tA[0] else a[-1])
    elif n.op_type == 'MatMul':
        v = out * shapes[n.input[0]][-1]
    elif n.op_type == 'Einsum':
        eq = [x.s.decode() for x in n.attribute if x.name == 'equation'][0]
        size = {}
        for term, name in zip(eq.split('->')[0].split(','), n.input):
            for c, d in zip(term, shapes[name]): size[c] = d
        v = int(np.prod(list(size.values())))
    else:
        continue
    macs[n.op_type] = macs.get(n.op_type, 0) + v
print(macs, sum(macs.values()))
import collections
print('ops', dict(collections.Counter(n.op_type for n in m.graph.node)))
print('initializer elements', sum(int(np.prod(t.dims)) for t in m.graph.initializer))
