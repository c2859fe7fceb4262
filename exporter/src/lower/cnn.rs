//! Lowering of tract's image ops: Conv, Deconv (ConvTranspose), MaxPool / SumPool, Resize
//! and NearestUpsample, Pad, Tile.

use anyhow::{anyhow, bail, Result};
use flowrt::ir::{CoordMode, Dim, Op, PadMode, PoolKind, ResizeMode, Window};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode as TractPad, Tile};
use tract_onnx::tract_core::ops::cnn::{
    Conv, Deconv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool,
};
use tract_onnx::tract_core::ops::nn::resize::{
    CoordTransformer, Interpolator, Nearest as CoreNearest, Resize as CoreResize,
};
use tract_onnx::tract_core::ops::nn::{DataFormat, NearestUpsample};
use tract_onnx_opl::resize::{CoordTransform, Nearest as OplNearest, Resize as OplResize};

use super::konst::{konst_f32, permute_const};
use super::shape::fixed_len;
use super::{Lowering, Value};

fn u16_of(v: usize, what: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| anyhow!("{what} {v} is larger than 65535"))
}

impl Lowering<'_> {
    /// Lowers the image ops; `None` when `node` is none of them.
    pub(super) fn lower_cnn(&mut self, node: &TypedNode) -> Result<Option<u32>> {
        let out = if let Some(conv) = node.op_as::<Conv>() {
            if conv.q_params.is_some() {
                bail!("quantized Conv is not supported");
            }
            if conv.kernel_fmt != KernelFormat::OIHW {
                bail!(
                    "Conv kernel format {:?} is not supported (only OIHW)",
                    conv.kernel_fmt
                );
            }
            let (x, window) = self.spatial_input(node, &conv.pool_spec)?;
            let (w, bias) = self.conv_weights(node, conv.pool_spec.output_channels)?;
            let w = self.channel_last(node, w)?;
            let groups = u32::try_from(conv.group)?;
            let mut inputs = vec![x, w];
            inputs.extend(bias);
            self.emit(node, Op::Conv { groups, window }, inputs)?
        } else if let Some(deconv) = node.op_as::<Deconv>() {
            if deconv.kernel_format != KernelFormat::OIHW {
                bail!(
                    "ConvTranspose kernel format {:?} is not supported",
                    deconv.kernel_format
                );
            }
            let (x, mut window) = self.spatial_input(node, &deconv.pool_spec)?;
            let (w, bias) = self.conv_weights(node, deconv.pool_spec.output_channels)?;
            let adj = &deconv.adjustments;
            let same = &deconv.pool_spec.padding;
            if matches!(same, PaddingSpec::SameUpper | PaddingSpec::SameLower) {
                // ONNX ConvTranspose: total = s (in - 1) + adj + d (k - 1) + 1 - out; SAME_UPPER
                // puts the larger half at the start (the reverse of Conv).
                let xs = self.dims(x).to_vec();
                let os = self.out_shape(node)?;
                let spec = &deconv.pool_spec;
                let r = spec.kernel_shape.len();
                let (strides, dil) = (spec.strides(), spec.dilations());
                for i in 0..r {
                    let (n, o) = (fixed_len(xs[2 + i]), fixed_len(os[2 + i]));
                    let full =
                        strides[i] * (n - 1) + adj[i] + dil[i] * (spec.kernel_shape[i] - 1) + 1;
                    let total = full.saturating_sub(o);
                    let (b, e) = if *same == PaddingSpec::SameUpper {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    };
                    let slot = if r == 1 { 1 } else { i };
                    window.pad_begin[slot] = u16_of(b, "pad")?;
                    window.pad_end[slot] = u16_of(e, "pad")?;
                }
            }
            let out_pad = match adj.len() {
                1 => [0, u16_of(adj[0], "output_padding")?],
                2 => [
                    u16_of(adj[0], "output_padding")?,
                    u16_of(adj[1], "output_padding")?,
                ],
                n => bail!("ConvTranspose with {n} spatial axes is not supported (1-D and 2-D)"),
            };
            let groups = u32::try_from(deconv.group)?;
            let mut inputs = vec![x, w];
            inputs.extend(bias);
            self.emit(
                node,
                Op::ConvTranspose {
                    groups,
                    window,
                    out_pad,
                },
                inputs,
            )?
        } else if let Some(mp) = node.op_as::<MaxPool>() {
            if mp.with_index_outputs.is_some() {
                bail!("MaxPool with an Indices output is not supported");
            }
            self.lower_pool(node, &mp.pool_spec, PoolKind::Max)?
        } else if let Some(sp) = node.op_as::<SumPool>() {
            if !sp.normalize {
                bail!("a sum pool without normalization (LpPool-like) is not supported");
            }
            let kind = if sp.count_include_pad {
                PoolKind::AverageIncludePad
            } else {
                PoolKind::AverageExcludePad
            };
            self.lower_pool(node, &sp.pool_spec, kind)?
        } else if let Some(up) = node.op_as::<NearestUpsample>() {
            let x = self.tensor(node.inputs[0])?;
            let s = &up.scales;
            let r = s.len();
            if r < 2 || s[..r - 2].iter().any(|v| *v != 1) {
                bail!("nearest upsample of axes other than the last two (scales {s:?})");
            }
            let scales = [s[r - 2] as f32, s[r - 1] as f32];
            let op = Op::Resize {
                mode: ResizeMode::NearestFloor,
                coord: CoordMode::Asymmetric,
                scales,
            };
            self.emit(node, op, vec![x])?
        } else if let Some(spec) = resize_spec(node)? {
            self.lower_resize(node, spec)?
        } else if let Some(pad) = node.op_as::<Pad>() {
            let x = self.tensor(node.inputs[0])?;
            let mode = match &pad.mode {
                TractPad::Constant(v) => {
                    let v = v.cast_to_scalar::<f32>()?;
                    PadMode::Constant(v)
                }
                TractPad::Reflect => PadMode::Reflect,
                TractPad::Edge => PadMode::Edge,
            };
            let mut pads = pad.pads.clone();
            if let Some(s) = self.split_axis(node.inputs[0])? {
                if pads[s] != (0, 0) {
                    bail!("Pad of a batch axis merged with heads");
                }
                pads.insert(s + 1, (0, 0));
            }
            let begin: Vec<u16> = pads
                .iter()
                .map(|p| u16_of(p.0, "pad"))
                .collect::<Result<_>>()?;
            let end: Vec<u16> = pads
                .iter()
                .map(|p| u16_of(p.1, "pad"))
                .collect::<Result<_>>()?;
            let op = Op::pad(mode, &begin, &end).map_err(|e| anyhow!("Pad: {e}"))?;
            self.emit(node, op, vec![x])?
        } else if let Some(tile) = node.op_as::<Tile>() {
            self.lower_tile(node, tile)?
        } else {
            return Ok(None);
        };
        Ok(Some(out))
    }

    /// The NCHW input of a conv / pool and its window, after checking the data format.
    fn spatial_input(&mut self, node: &TypedNode, spec: &PoolSpec) -> Result<(u32, Window)> {
        if spec.data_format != DataFormat::NCHW {
            bail!(
                "data format {:?} is not supported (only NCHW)",
                spec.data_format
            );
        }
        let x = self.tensor(node.inputs[0])?;
        let shape = self.dims(x).to_vec();
        if self.is_split(node.inputs[0])? {
            bail!("convolution of a batch axis merged with heads");
        }
        let spatial: Vec<usize> = shape
            .iter()
            .skip(2)
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n as usize),
                Dim::Batch => Err(anyhow!("convolution over the batch axis")),
            })
            .collect::<Result<_>>()?;
        let window = window_of(spec, &spatial)?;
        Ok((x, window))
    }

    /// The constant kernel (as stored, OIHW / IOHW) and the bias (`None` when it is zero).
    fn conv_weights(
        &mut self,
        node: &TypedNode,
        out_channels: usize,
    ) -> Result<(u32, Option<u32>)> {
        let w = self.tensor(node.inputs[1])?;
        if self.desc.tensors[w as usize].data.is_none() {
            bail!("a convolution kernel computed at run time is not supported (weights must be constants)");
        }
        let Some(&b_outlet) = node.inputs.get(2) else {
            return Ok((w, None));
        };
        let data = match self.value(b_outlet)? {
            Value::Konst(b) => konst_f32(&b)?,
            Value::Tensor(t) => match &self.desc.tensors[t as usize].data {
                Some(d) => d.clone(),
                None => bail!("a convolution bias computed at run time is not supported"),
            },
        };
        if data.iter().all(|v| *v == 0.0) {
            return Ok((w, None));
        }
        let full = match data.len() {
            1 => vec![data[0]; out_channels],
            n if n == out_channels => data,
            n => bail!("convolution bias has {n} values for {out_channels} output channels"),
        };
        let id = self.push_const(node, "bias", vec![Dim::Fixed(out_channels as u32)], full);
        Ok((w, Some(id)))
    }

    /// The Conv kernel `[M, C/g, (KH,) KW]` reordered to the runtime's channel-last
    /// `[C/g, (KH,) KW, M]`.
    fn channel_last(&mut self, node: &TypedNode, w: u32) -> Result<u32> {
        let t = &self.desc.tensors[w as usize];
        let data = t
            .data
            .clone()
            .ok_or_else(|| anyhow!("Conv kernel is not a constant"))?;
        let dims: Vec<usize> = t
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Ok(*n as usize),
                Dim::Batch => Err(anyhow!("Conv kernel has a batch dim")),
            })
            .collect::<Result<_>>()?;
        if dims.is_empty() {
            bail!("Conv kernel is a scalar");
        }
        let perm: Vec<usize> = (1..dims.len()).chain([0]).collect();
        let out = permute_const(&data, &dims, &perm);
        let mut shape: Vec<Dim> = t.shape[1..].to_vec();
        shape.push(t.shape[0]);
        Ok(self.push_const(node, "kernel", shape, out))
    }

    fn lower_pool(&mut self, node: &TypedNode, spec: &PoolSpec, kind: PoolKind) -> Result<u32> {
        let (x, window) = self.spatial_input(node, spec)?;
        let k = &spec.kernel_shape;
        let kernel = match k.len() {
            1 => [1, u16_of(k[0], "kernel size")?],
            2 => [u16_of(k[0], "kernel size")?, u16_of(k[1], "kernel size")?],
            n => bail!("pooling over {n} spatial axes is not supported (1-D and 2-D)"),
        };
        self.emit(
            node,
            Op::Pool {
                kind,
                kernel,
                window,
            },
            vec![x],
        )
    }

    fn lower_resize(&mut self, node: &TypedNode, spec: ResizeSpec) -> Result<u32> {
        let x = self.tensor(node.inputs[0])?;
        let in_shape = self.dims(x).to_vec();
        let out_shape = self.out_shape(node)?;
        let r = in_shape.len();
        if r < 2 || out_shape.len() != r || in_shape[..r - 2] != out_shape[..r - 2] {
            bail!("Resize may only change the last two axes ({in_shape:?} -> {out_shape:?})");
        }
        let konst = |ix: Option<usize>| -> Option<Vec<f32>> {
            let outlet = node.inputs.get(ix?)?;
            let k = self.model.outlet_fact(*outlet).ok()?.konst.clone()?;
            let k = k.cast_to::<f32>().ok()?;
            let v = k.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec();
            Some(v)
        };
        let len = |d: Dim| match d {
            Dim::Fixed(n) => Ok(n as f32),
            Dim::Batch => Err(anyhow!("Resize of the batch axis")),
        };
        let given = konst(spec.scales_input).filter(|v| !v.is_empty());
        // Scales per axis of the input (opset 18's `axes` names the axes the scales are for).
        let full: Option<Vec<f32>> = match (&given, spec.axes) {
            (Some(s), Some(axes)) if s.len() == axes.len() => {
                let mut f = vec![1.0f32; r];
                for (a, v) in axes.iter().zip(s) {
                    let a = if *a < 0 { *a + r as i64 } else { *a };
                    *f.get_mut(a as usize)
                        .ok_or_else(|| anyhow!("Resize axis {a} out of range"))? = *v;
                }
                Some(f)
            }
            (Some(s), None) if s.len() == r => Some(s.clone()),
            (Some(s), _) => bail!("Resize scales {s:?} do not match the rank {r}"),
            (None, _) => None,
        };
        if let Some(f) = &full {
            if f[..r - 2].iter().any(|v| *v != 1.0) {
                bail!("Resize of axes other than the last two (scales {f:?}) is not supported");
            }
        }
        let scales = match full {
            Some(s) => [s[r - 2], s[r - 1]],
            None if spec.sizes_input.is_some() || spec.scales_input.is_some() => [
                len(out_shape[r - 2])? / len(in_shape[r - 2])?,
                len(out_shape[r - 1])? / len(in_shape[r - 1])?,
            ],
            None => bail!("Resize without constant scales or sizes"),
        };
        self.emit(
            node,
            Op::Resize {
                mode: spec.mode,
                coord: spec.coord,
                scales,
            },
            vec![x],
        )
    }

    /// `Tile` as Reshape (a unit axis before each tiled axis), Expand, Reshape.
    fn lower_tile(&mut self, node: &TypedNode, tile: &Tile) -> Result<u32> {
        let x = self.tensor(node.inputs[0])?;
        let shape = self.dims(x).to_vec();
        let mult: Vec<u32> = tile
            .multipliers
            .iter()
            .map(|m| {
                m.to_i64()
                    .ok()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| anyhow!("Tile multiplier `{m}` is not a constant"))
            })
            .collect::<Result<_>>()?;
        if self.is_split(node.inputs[0])? || mult.len() != shape.len() {
            bail!("Tile of a batch axis merged with heads");
        }
        let mut unit = Vec::new();
        let mut wide = Vec::new();
        for (d, m) in shape.iter().zip(&mult) {
            if *m != 1 {
                if *d == Dim::Batch {
                    bail!("Tile along the batch axis is not supported");
                }
                unit.push(Dim::Fixed(1));
                wide.push(Dim::Fixed(*m));
            }
            unit.push(*d);
            wide.push(*d);
        }
        if unit.len() > flowrt::ops::MAX_RANK {
            bail!("Tile needs rank {} (> 6) in flowrt's lowering", unit.len());
        }
        let u = self.emit_step(node, "unit", Op::Reshape, vec![x], unit);
        let e = self.emit_step(node, "expand", Op::Expand, vec![u], wide);
        self.emit(node, Op::Reshape, vec![e])
    }
}

/// What a Resize (tract's core op or the ONNX one) asks for.
struct ResizeSpec<'a> {
    mode: ResizeMode,
    coord: CoordMode,
    /// The input slots of the scales and the sizes, where given.
    scales_input: Option<usize>,
    sizes_input: Option<usize>,
    /// The axes the scales are for (opset 18); `None`: all of them.
    axes: Option<&'a [i64]>,
}

/// The [`ResizeSpec`] of a Resize node; `None` when `node` is not one.
fn resize_spec(node: &TypedNode) -> Result<Option<ResizeSpec<'_>>> {
    let (mode, coord, (scales_input, sizes_input), axes) =
        if let Some(rs) = node.op_as::<CoreResize>() {
            let mode = match (&rs.interpolator, rs.nearest) {
                (Interpolator::Linear, _) => ResizeMode::Linear,
                (Interpolator::Nearest, CoreNearest::Floor) => ResizeMode::NearestFloor,
                (Interpolator::Nearest, CoreNearest::RoundPreferCeil) => {
                    ResizeMode::NearestRoundPreferCeil
                }
                (Interpolator::Cubic, _) => bail!("Resize mode cubic is not supported"),
            };
            let coord = coord_mode(&rs.coord_transformer)?;
            let inputs = (rs.optional_scales_input, rs.optional_sizes_input);
            (mode, coord, inputs, None)
        } else if let Some(rs) = node.op_as::<OplResize>() {
            if rs.antialias || rs.exclude_outside {
                bail!("Resize with antialias or exclude_outside is not supported");
            }
            let CoordTransform::Plain(ct) = &rs.coord_transformer else {
                bail!("Resize coordinate mode tf_crop_and_resize is not supported");
            };
            let mode = match (&rs.interpolator, rs.nearest) {
                (Interpolator::Linear, _) => ResizeMode::Linear,
                (Interpolator::Nearest, OplNearest::Floor) => ResizeMode::NearestFloor,
                (Interpolator::Nearest, OplNearest::Ceil) => ResizeMode::NearestCeil,
                (Interpolator::Nearest, OplNearest::RoundPreferFloor) => {
                    ResizeMode::NearestRoundPreferFloor
                }
                (Interpolator::Nearest, OplNearest::RoundPreferCeil) => {
                    ResizeMode::NearestRoundPreferCeil
                }
                (Interpolator::Cubic, _) => bail!("Resize mode cubic is not supported"),
            };
            let coord = coord_mode(ct)?;
            let inputs = (rs.optional_scales_input, rs.optional_sizes_input);
            (mode, coord, inputs, rs.axes.as_deref())
        } else {
            return Ok(None);
        };
    Ok(Some(ResizeSpec {
        mode,
        coord,
        scales_input,
        sizes_input,
        axes,
    }))
}

fn coord_mode(ct: &CoordTransformer) -> Result<CoordMode> {
    Ok(match ct {
        CoordTransformer::HalfPixel => CoordMode::HalfPixel,
        CoordTransformer::PytorchHalfPixel => CoordMode::PytorchHalfPixel,
        CoordTransformer::AlignCorners => CoordMode::AlignCorners,
        CoordTransformer::Asymmetric => CoordMode::Asymmetric,
        other => bail!("Resize coordinate_transformation_mode {other:?} is not supported"),
    })
}

/// The flowrt window of a tract pool spec over `spatial` input dims (1 or 2 of them).
fn window_of(spec: &PoolSpec, spatial: &[usize]) -> Result<Window> {
    let r = spec.kernel_shape.len();
    if r != spatial.len() || !(1..=2).contains(&r) {
        bail!("{r}-D windows are not supported (only 1-D and 2-D)");
    }
    let strides = spec.strides();
    let dilations = spec.dilations();
    let (before, after): (Vec<usize>, Vec<usize>) = match &spec.padding {
        PaddingSpec::Valid => (vec![0; r], vec![0; r]),
        PaddingSpec::Explicit(b, a) | PaddingSpec::ExplicitOnnxPool(b, a, _) => {
            (b.to_vec(), a.to_vec())
        }
        PaddingSpec::SameUpper | PaddingSpec::SameLower => {
            let mut b = vec![0; r];
            let mut a = vec![0; r];
            for i in 0..r {
                let (s, d, k, n) = (strides[i], dilations[i], spec.kernel_shape[i], spatial[i]);
                let out = n.div_ceil(s);
                let need = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(n);
                let small = need / 2;
                let (pb, pa) = if spec.padding == PaddingSpec::SameUpper {
                    (small, need - small)
                } else {
                    (need - small, small)
                };
                b[i] = pb;
                a[i] = pa;
            }
            (b, a)
        }
    };
    let pair = |v: &[usize], what: &str| -> Result<[u16; 2]> {
        Ok(if r == 1 {
            [
                if what == "stride" || what == "dilation" {
                    1
                } else {
                    0
                },
                u16_of(v[0], what)?,
            ]
        } else {
            [u16_of(v[0], what)?, u16_of(v[1], what)?]
        })
    };
    Ok(Window {
        stride: pair(&strides, "stride")?,
        dilation: pair(&dilations, "dilation")?,
        pad_begin: pair(&before, "pad")?,
        pad_end: pair(&after, "pad")?,
    })
}
