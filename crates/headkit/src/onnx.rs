//! ONNX node patterns the head kinds share.

use graft_heads::Activation;
use graft_onnx::Graph;
use ndarray::{Array1, Array2, ArrayView1};

/// `x · w + b`.
pub(crate) fn affine(g: &mut Graph, x: &str, w: &Array2<f32>, b: ArrayView1<'_, f32>) -> String {
    let w = g.constant("weights", w.view().into_dyn());
    let b = g.constant("bias", b.into_dyn());
    let product = g.node("MatMul", &[x, &w], &[]);
    g.node("Add", &[&product, &b], &[])
}

/// An MLP's layers: affine maps with the activation between them, none after the last.
pub(crate) fn mlp_nodes(
    g: &mut Graph,
    x: &str,
    layers: Vec<(&Array2<f32>, &Array1<f32>)>,
    activation: Activation,
) -> String {
    let last = layers.len() - 1;
    let mut x = x.to_owned();
    for (i, (w, b)) in layers.into_iter().enumerate() {
        x = affine(g, &x, w, b.view());
        if i < last {
            x = match activation {
                Activation::Relu => g.node("Relu", &[&x], &[]),
                Activation::Gelu => gelu_tanh(g, &x),
            };
        }
    }
    x
}

/// GELU, tanh approximation (as graft's MLP): ½x(1 + tanh(√(2/π)(x + 0.044715x³))), in operators every
/// ONNX Runtime has (the `Gelu` operator needs opset 20).
fn gelu_tanh(g: &mut Graph, x: &str) -> String {
    let square = g.node("Mul", &[x, x], &[]);
    let cube = g.node("Mul", &[&square, x], &[]);
    let a = g.scalar("gelu_a", 0.044715);
    let scaled_cube = g.node("Mul", &[&cube, &a], &[]);
    let inner = g.node("Add", &[x, &scaled_cube], &[]);
    let c = g.scalar("gelu_c", (2.0 / std::f64::consts::PI).sqrt() as f32);
    let u = g.node("Mul", &[&inner, &c], &[]);
    let t = g.node("Tanh", &[&u], &[]);
    let one = g.scalar("one", 1.0);
    let one_plus = g.node("Add", &[&t, &one], &[]);
    let half = g.scalar("half", 0.5);
    let half_x = g.node("Mul", &[x, &half], &[]);
    g.node("Mul", &[&half_x, &one_plus], &[])
}

/// Each row divided by its L2 norm; an all-zero row stays zero (graft's rule).
pub fn l2_normalize(g: &mut Graph, x: &str) -> String {
    let squares = g.node("Mul", &[x, x], &[]);
    let sum = g.reduce("ReduceSum", &squares, &[1], true);
    let norm = g.node("Sqrt", &[&sum], &[]);
    let tiny = g.scalar("tiny", f32::MIN_POSITIVE);
    let safe = g.node("Max", &[&norm, &tiny], &[]);
    g.node("Div", &[x, &safe], &[])
}
