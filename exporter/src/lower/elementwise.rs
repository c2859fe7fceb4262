//! Lowering of element-wise ops: binary arithmetic and comparisons, unary functions
//! (constant powers included) and `Where`.

use anyhow::{bail, Result};
use flowrt::ir::{BinaryOp, Dim, Op, UnaryOp};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::logic::Iff;
use tract_onnx::tract_core::ops::math::PowConst;
use tract_onnx::tract_core::ops::nn::{GeluApproximate, LeakyRelu};

use super::Lowering;
use crate::import::FlowrtUnary;

/// `true` for a comparison, whose booleans flowrt keeps as f32 masks (1.0 / 0.0).
pub(super) fn is_comparison(node: &TypedNode) -> bool {
    node.op_as::<TypedBinOp>()
        .is_some_and(|b| matches!(b.0.name(), "GT" | "LT" | "GTE" | "LTE" | "Eq"))
}

impl Lowering<'_> {
    /// Lowers element-wise ops; `None` when `node` is none of them.
    pub(super) fn lower_elementwise(&mut self, node: &TypedNode) -> Result<Option<u32>> {
        let out = if let Some(bin) = node.op_as::<TypedBinOp>() {
            let op = binary_of(bin)?;
            let a = self.tensor(node.inputs[0])?;
            let b = self.tensor(node.inputs[1])?;
            self.emit(node, Op::Binary(op), vec![a, b])?
        } else if let Some(ew) = node.op_as::<ElementWiseOp>() {
            let x = self.tensor(node.inputs[0])?;
            let pow = ew.0.downcast_ref::<PowConst>().map(|p| p.exponent);
            if pow == Some(2.0) {
                self.emit(node, Op::Unary(UnaryOp::Square), vec![x])?
            } else if pow == Some(3.0) {
                // x^3 as x * x * x (GELU-tanh's cube; libm's powf would cost 20x more): at
                // most ~1.5 ulp from the exact cube.
                let sq = self.emit_like(node, "square", Op::Unary(UnaryOp::Square), vec![x]);
                self.emit(node, Op::Binary(BinaryOp::Mul), vec![sq, x])?
            } else if let Some(exponent) = pow {
                let rank = self.dims(x).len();
                let e =
                    self.push_const(node, "exponent", vec![Dim::Fixed(1); rank], vec![exponent]);
                self.emit(node, Op::Binary(BinaryOp::Pow), vec![x, e])?
            } else {
                let op = unary_of(ew)?;
                self.emit(node, Op::Unary(op), vec![x])?
            }
        } else if node.op_is::<Iff>() {
            let inputs = self.input_tensors(node)?;
            self.emit(node, Op::Where, inputs)?
        } else {
            return Ok(None);
        };
        Ok(Some(out))
    }
}

fn binary_of(bin: &TypedBinOp) -> Result<BinaryOp> {
    Ok(match bin.0.name() {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        "Div" => BinaryOp::Div,
        "Pow" => BinaryOp::Pow,
        "Max" => BinaryOp::Max,
        "Min" => BinaryOp::Min,
        "GT" => BinaryOp::Greater,
        "LT" => BinaryOp::Less,
        "GTE" => BinaryOp::GreaterOrEqual,
        "LTE" => BinaryOp::LessOrEqual,
        "Eq" => BinaryOp::Equal,
        other => bail!("binary op {other} is not supported"),
    })
}

fn unary_of(ew: &ElementWiseOp) -> Result<UnaryOp> {
    if let Some(FlowrtUnary(op)) = ew.0.downcast_ref::<FlowrtUnary>() {
        return Ok(*op);
    }
    if let Some(l) = ew.0.downcast_ref::<LeakyRelu>() {
        return Ok(UnaryOp::LeakyRelu { alpha: l.alpha });
    }
    if let Some(g) = ew.0.downcast_ref::<GeluApproximate>() {
        if g.fast_impl {
            bail!("GeluApproximate with fast_impl (x^2 form) is not supported");
        }
        return Ok(UnaryOp::GeluTanh);
    }
    Ok(match ew.0.name().as_str() {
        "Sigmoid" => UnaryOp::Sigmoid,
        "Tanh" => UnaryOp::Tanh,
        "Exp" => UnaryOp::Exp,
        "Ln" => UnaryOp::Log,
        "Sin" => UnaryOp::Sin,
        "Cos" => UnaryOp::Cos,
        "Sqrt" => UnaryOp::Sqrt,
        "Rsqrt" => UnaryOp::Rsqrt,
        "Floor" => UnaryOp::Floor,
        "Ceil" => UnaryOp::Ceil,
        "RoundHalfToEven" => UnaryOp::Round,
        "Sign" => UnaryOp::Sign,
        "Recip" => UnaryOp::Recip,
        "Abs" => UnaryOp::Abs,
        "Neg" => UnaryOp::Neg,
        "Square" => UnaryOp::Square,
        "Erf" => UnaryOp::Erf,
        "Silu" => UnaryOp::Silu,
        "GeluExact" => UnaryOp::GeluErf,
        other => bail!("element-wise op {other} is not supported"),
    })
}
