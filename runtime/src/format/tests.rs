use super::*;
use crate::ops::{Binary, CoordMode, PadMode, PoolKind, ReduceKind, ResizeMode, Unary, Window};

#[test]
fn every_op_round_trips_through_its_encoding() {
    let mut ops = std::vec![
        NodeOp::Dense,
        NodeOp::MatMul,
        NodeOp::Concat { axis: 3 },
        NodeOp::Reshape,
        NodeOp::Widen,
        NodeOp::Lut { of: Unary::Silu },
        NodeOp::Lut {
            of: Unary::Elu { alpha: 0.5 },
        },
        NodeOp::Norm {
            start: 1,
            end: 3,
            eps: 1e-5,
        },
        NodeOp::Expand,
        NodeOp::Where,
        NodeOp::Gather,
        NodeOp::Transpose {
            rank: 3,
            perm: [2, 0, 1, 0, 0, 0]
        },
        NodeOp::Transpose {
            rank: 0,
            perm: [0; MAX_RANK]
        },
        NodeOp::Slice {
            axis: 1,
            start: 2,
            end: 9,
            step: 3
        },
        NodeOp::Conv {
            groups: 2,
            window: Window {
                stride: [2, 1],
                dilation: [1, 3],
                pad_begin: [1, 0],
                pad_end: [0, 2],
            },
        },
        NodeOp::ConvTranspose {
            groups: 1,
            window: Window::UNIT,
            out_pad: [1, 0],
        },
        NodeOp::Pool {
            kind: PoolKind::AverageIncludePad,
            kernel: [3, 2],
            window: Window::UNIT,
        },
        NodeOp::Softmax {
            start: 1,
            end: 3,
            log: true,
        },
        NodeOp::Resize {
            mode: ResizeMode::Linear,
            coord: CoordMode::AlignCorners,
            scales: [2.0, 0.5],
        },
        NodeOp::Pad {
            mode: PadMode::Constant(-1.5),
            begin: [0, 1, 2, 0, 0, 0],
            end: [0, 0, 3, 0, 0, 0],
        },
        NodeOp::Pad {
            mode: PadMode::Reflect,
            begin: [0; MAX_RANK],
            end: [1; MAX_RANK],
        },
    ];
    for kind in ReduceKind::ALL {
        ops.push(NodeOp::Reduce {
            kind,
            start: 1,
            end: 2,
        });
    }
    for c in 0..=11 {
        ops.push(NodeOp::Binary(Binary::from_code(c).unwrap()));
    }
    for c in 0..=24 {
        ops.push(NodeOp::Unary(Unary::from_code(c, 0.25, 1.5).unwrap()));
    }
    for op in ops {
        let (code, attrs) = op.encode();
        assert_eq!(NodeOp::decode(code, attrs), Ok(op), "{}", op.name());
        check_linked_decoding(op, code, attrs);
    }
}

/// Links nothing: every op code is refused.
struct Nothing;
impl crate::linked::Selection for Nothing {
    const NODES: u32 = 0;
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 0;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

/// Links every node kind but no unary or binary operation.
struct NoElementwise;
impl crate::linked::Selection for NoElementwise {
    const NODES: u32 = u32::MAX;
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 0;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

/// The selection-aware decoding of `op` (stored as `code`, `attrs`): `All` links it;
/// a selection without its kind refuses it by name before decoding, and its guarded decoder
/// does not know the code.
fn check_linked_decoding(op: NodeOp, code: u16, attrs: [u32; NODE_ATTRS]) {
    use crate::linked::All;
    use crate::Error;
    assert_eq!(opcode_linked::<All>(code, 1), Ok(()));
    assert_eq!(NodeOp::decode_linked::<All>(code, attrs), Ok(op));
    let refused = opcode_linked::<Nothing>(code, 1);
    assert!(
        matches!(refused, Err(Error::NotLinked { .. })),
        "{}: {refused:?}",
        op.name()
    );
    assert!(NodeOp::decode_linked::<Nothing>(code, attrs).is_err());
    match op {
        NodeOp::Unary(u) => {
            assert_eq!(refused, Err(Error::NotLinked { what: u.name() }));
            assert!(opcode_linked::<NoElementwise>(code, 1).is_err());
        }
        NodeOp::Binary(b) => {
            assert_eq!(refused, Err(Error::NotLinked { what: b.name() }));
            assert!(opcode_linked::<NoElementwise>(code, 1).is_err());
        }
        _ => {
            // The op-code table agrees with the node kind of the decoded op.
            let bit = crate::select::node_bit(&op);
            assert_eq!(node::opcode_bit(code), Some(bit), "{}", op.name());
            assert_eq!(opcode_linked::<NoElementwise>(code, 1), Ok(()));
        }
    }
}

/// Links the float Dense and Conv only.
struct FloatOnly;
impl crate::linked::Selection for FloatOnly {
    const NODES: u32 = crate::select::node::DENSE | crate::select::node::CONV;
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 0;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

/// Links the full-integer Dense and Conv only.
struct IntegerOnly;
impl crate::linked::Selection for IntegerOnly {
    const NODES: u32 = crate::select::node::DENSE_Q8 | crate::select::node::CONV_Q8;
    const UNARY: u32 = 0;
    const BINARY: u32 = 0;
    const WEIGHTS: u32 = 0;
    const METHODS: u32 = 0;
    const FEW_STEP: bool = false;
    const GUIDANCE: bool = false;
}

#[test]
fn full_integer_dense_and_conv_are_kinds_of_their_own() {
    use crate::Error;
    for (code, float, integer) in [
        (opcode::DENSE, "Dense", "full-integer Dense"),
        (opcode::CONV, "Conv", "full-integer Conv"),
    ] {
        for n in [2, 3] {
            assert_eq!(opcode_linked::<FloatOnly>(code, n), Ok(()));
            let e = Err(Error::NotLinked { what: float });
            assert_eq!(opcode_linked::<IntegerOnly>(code, n), e);
        }
        assert_eq!(opcode_linked::<IntegerOnly>(code, 4), Ok(()));
        let e = Err(Error::NotLinked { what: integer });
        assert_eq!(opcode_linked::<FloatOnly>(code, 4), e);
    }
    // Either form decodes the op code (the arity picks the kernel).
    let attrs = [0u32; NODE_ATTRS];
    assert_eq!(
        NodeOp::decode_linked::<IntegerOnly>(opcode::DENSE, attrs),
        Ok(NodeOp::Dense)
    );
    assert_eq!(
        NodeOp::decode_linked::<FloatOnly>(opcode::DENSE, attrs),
        Ok(NodeOp::Dense)
    );
}

#[test]
fn unknown_op_codes_pass_the_linked_check_and_fail_decoding() {
    for code in [
        0x7777,
        opcode::BINARY_BASE + 12,
        opcode::UNARY_BASE + 25,
        0x0003,
    ] {
        assert_eq!(opcode_linked::<Nothing>(code, 1), Ok(()), "{code:#x}");
        assert!(NodeOp::decode(code, [0; NODE_ATTRS]).is_err());
    }
}

#[test]
fn decode_rejects_bad_attributes() {
    let mut a = [0u32; NODE_ATTRS];
    assert!(NodeOp::decode(0x7777, a).is_err());
    assert!(NodeOp::decode(opcode::BINARY_BASE + 12, a).is_err());
    assert!(NodeOp::decode(opcode::UNARY_BASE + 25, a).is_err());
    assert!(NodeOp::decode(opcode::SLICE, a).is_err()); // step 0
    a[7] = 1;
    assert!(NodeOp::decode(opcode::DENSE, a).is_err()); // unused word
    assert!(NodeOp::decode(opcode::WHERE, a).is_err()); // unused word
    assert!(NodeOp::decode(opcode::LUT + 1, [0; NODE_ATTRS]).is_err());
    let mut p = [0u32; NODE_ATTRS];
    p[0] = 2;
    p[1] = 1;
    p[2] = 1;
    assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // not a permutation
    p[2] = 2;
    assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // out of range
    p[0] = 7;
    assert!(NodeOp::decode(opcode::TRANSPOSE, p).is_err()); // rank > 6
    let mut u = [0u32; NODE_ATTRS];
    u[0] = f32::INFINITY.to_bits();
    assert!(NodeOp::decode(opcode::UNARY_BASE + 1, u).is_err()); // non-finite alpha
    u[0] = 1.0f32.to_bits();
    assert!(NodeOp::decode(opcode::UNARY_BASE, u).is_err()); // Relu has no alpha
                                                             // Lut: word 0 a unary code, words 1-2 its parameters, the rest zero.
    let mut l = [0u32; NODE_ATTRS];
    l[0] = 7;
    assert_eq!(
        NodeOp::decode(opcode::LUT, l),
        Ok(NodeOp::Lut { of: Unary::Silu })
    );
    l[0] = 25;
    assert!(NodeOp::decode(opcode::LUT, l).is_err()); // no such function
    l[0] = 0x1_0007;
    assert!(NodeOp::decode(opcode::LUT, l).is_err()); // code past u16
    l[0] = 7;
    l[1] = 1.0f32.to_bits();
    assert!(NodeOp::decode(opcode::LUT, l).is_err()); // SiLU has no alpha
    l[0] = 2;
    l[1] = f32::NAN.to_bits();
    assert!(NodeOp::decode(opcode::LUT, l).is_err()); // non-finite alpha
    l[1] = 1.0f32.to_bits();
    l[3] = 1;
    assert!(NodeOp::decode(opcode::LUT, l).is_err()); // unused word
}

#[test]
fn shapes() {
    let s = Shape::new(&[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4)]).unwrap();
    assert_eq!(s.rank(), 3);
    assert_eq!(s.batch_axis(), Some(0));
    assert_eq!(s.row_elements(), Some(12));
    assert_eq!(s.elements(5), Some(60));
    assert_eq!(std::format!("{s}"), "[B, 3, 4]");
    assert_eq!(Shape::SCALAR.elements(7), Some(1));
    assert!(Shape::new(&[Dim::Batch, Dim::Batch]).is_err());
    assert!(Shape::new(&[Dim::Fixed(0)]).is_err());
    assert!(Shape::new(&[Dim::Fixed(1); 7]).is_err());
    assert!(Shape::from_raw(2, 2, [1, 1, 0, 0, 0, 0]).is_err());
    assert!(Shape::from_raw(2, 0, [1, 1, 0, 0, 0, 0]).is_err());
    assert!(Shape::from_raw(2, NO_BATCH, [1, 1, 1, 0, 0, 0]).is_err());
    let big = Shape::new(&[Dim::Batch, Dim::Fixed(u32::MAX), Dim::Fixed(u32::MAX)]).unwrap();
    assert_eq!(big.elements(usize::MAX), None);
}

#[test]
fn symbolic_shape_rules() {
    let sh = |d: &[Dim]| Shape::new(d).unwrap();
    let (b, f) = (Dim::Batch, Dim::Fixed);
    let add = NodeOp::Binary(Binary::Add);
    let check = |op: &NodeOp, ins: &[Shape], out: Shape| {
        rules::check_node(op, ins.len(), |i| ins.get(i).copied(), &out)
    };
    assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(4)])], sh(&[b, f(4)])).is_ok());
    assert!(check(&add, &[sh(&[b, f(1)]), sh(&[f(1), f(4)])], sh(&[b, f(4)])).is_ok());
    assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(3), f(4)])], sh(&[b, f(4)])).is_err());
    assert!(check(&add, &[sh(&[b, f(4)]), sh(&[f(4), b])], sh(&[b, f(4)])).is_err());
    assert!(check(&add, &[sh(&[b])], sh(&[b])).is_err()); // arity
    let mm = NodeOp::MatMul;
    assert!(check(
        &mm,
        &[sh(&[b, f(2), f(3)]), sh(&[f(3), f(5)])],
        sh(&[b, f(2), f(5)])
    )
    .is_ok());
    assert!(check(&mm, &[sh(&[f(2), b]), sh(&[b, f(5)])], sh(&[f(2), f(5)])).is_ok());
    assert!(check(
        &mm,
        &[sh(&[f(2), f(4)]), sh(&[f(3), f(5)])],
        sh(&[f(2), f(5)])
    )
    .is_err());
    let cat = NodeOp::Concat { axis: 0 };
    assert!(check(&cat, &[sh(&[b, f(2)]), sh(&[b, f(2)])], sh(&[b, f(2)])).is_err());
    let ex = NodeOp::Expand;
    assert!(check(&ex, &[sh(&[f(1), f(4)])], sh(&[b, f(4)])).is_ok());
    assert!(check(&ex, &[sh(&[f(2), f(4)])], sh(&[b, f(4)])).is_err());
    let wh = NodeOp::Where;
    let (bf4, one) = (sh(&[b, f(4)]), Shape::SCALAR);
    assert!(check(&wh, &[bf4, bf4, bf4], bf4).is_ok());
    assert!(check(&wh, &[bf4, sh(&[f(4)]), one], bf4).is_ok());
    assert!(check(
        &wh,
        &[sh(&[f(3), f(1), f(1)]), bf4, one],
        sh(&[f(3), b, f(4)])
    )
    .is_ok());
    assert!(check(&wh, &[one, sh(&[b, f(1)]), sh(&[f(4)])], bf4).is_ok());
    assert!(check(&wh, &[one, one, one], one).is_ok());
    assert!(check(&wh, &[bf4, bf4], bf4).is_err()); // arity
    assert!(check(&wh, &[bf4, bf4, bf4, bf4], bf4).is_err()); // arity
    assert!(check(&wh, &[bf4, sh(&[f(3)]), bf4], bf4).is_err()); // 3 vs 4
    assert!(check(&wh, &[sh(&[f(2), f(4)]), bf4, bf4], bf4).is_err()); // B vs 2
    assert!(check(&wh, &[bf4, bf4, bf4], sh(&[f(1), f(4)])).is_err()); // wrong output
    assert!(check(&wh, &[one, one, one], sh(&[f(1)])).is_err()); // wrong output rank
    assert!(check(&wh, &[sh(&[b, f(1)]), sh(&[f(1), b]), one], bf4).is_err()); // [B, B]
    let rs = NodeOp::Reshape;
    assert!(check(&rs, &[sh(&[b, f(2), f(3)])], sh(&[b, f(6)])).is_ok());
    assert!(check(&rs, &[sh(&[f(2), b, f(3)])], sh(&[b, f(6)])).is_ok());
    assert!(check(&rs, &[sh(&[b, f(6)])], sh(&[f(6)])).is_err());
}
