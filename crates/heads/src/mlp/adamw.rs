//! AdamW (Loshchilov & Hutter, 2019): decoupled weight decay, bias-corrected moments.

use ndarray::{Array1, Array2};

use super::network::{Layer, Network};

/// AdamW state (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, as PyTorch's defaults).
pub(crate) struct AdamW {
    pub(crate) m: Vec<Layer<f32>>,
    pub(crate) v: Vec<Layer<f32>>,
    pub(crate) t: i32,
}

impl AdamW {
    pub(crate) fn new(net: &Network<f32>) -> Self {
        let zeros = || {
            net.layers
                .iter()
                .map(|l| Layer {
                    w: Array2::zeros(l.w.raw_dim()),
                    b: Array1::zeros(l.b.raw_dim()),
                })
                .collect::<Vec<_>>()
        };
        AdamW {
            m: zeros(),
            v: zeros(),
            t: 0,
        }
    }

    pub(crate) fn step(
        &mut self,
        net: &mut Network<f32>,
        grads: &[Layer<f32>],
        rate: f32,
        decay: f32,
    ) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: f32| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *p -= rate * ((*m / c1) / ((*v / c2).sqrt() + EPS) + decay * *p);
            }
        };
        for (((layer, g), m), v) in net
            .layers
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            update(
                layer
                    .w
                    .as_slice_mut()
                    .expect("owned weights are contiguous"),
                g.w.as_slice().expect("fresh gradients are contiguous"),
                m.w.as_slice_mut().expect("contiguous"),
                v.w.as_slice_mut().expect("contiguous"),
                decay,
            );
            update(
                layer.b.as_slice_mut().expect("contiguous"),
                g.b.as_slice().expect("contiguous"),
                m.b.as_slice_mut().expect("contiguous"),
                v.b.as_slice_mut().expect("contiguous"),
                0.0,
            );
        }
    }
}
