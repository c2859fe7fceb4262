//! The `PIPELINE` section: round trip, the step rule, and typed errors for malformed tables
//! or nested files (never a panic).
#![cfg(feature = "alloc")]

mod common;

use common::{assert_invalid_patches, patched, section_range};
use flowrt::format::{section, AlignedBytes};
use flowrt::grid::Uniform;
use flowrt::ir::{BinaryOp, Dim, ModelBuilder, ModelDesc, Op, Role};
use flowrt::pipeline::StageKind;
use flowrt::solver::Method;
use flowrt::{Error, Model};

/// v(x, t) = c (a constant velocity), x [B, 2], t [B].
fn constant(c: f32) -> ModelDesc {
    let mut m = ModelBuilder::default();
    let x = m.input(&[Dim::Batch, Dim::Fixed(2)], Role::X);
    let _t = m.input(&[Dim::Batch], Role::T);
    let k = m.constant(&[Dim::Fixed(1)], vec![c]);
    let o = common::zero_plus(&mut m, x, k);
    m.finish(o)
}

/// y = [x, x] (a decoder to 4 values per row).
fn doubler() -> ModelDesc {
    let mut m = ModelBuilder::default();
    let x = m.input(&[Dim::Batch, Dim::Fixed(2)], Role::X);
    let o = m.node(
        Op::Concat { axis: 1 },
        &[x, x],
        &[Dim::Batch, Dim::Fixed(4)],
    );
    m.finish(o)
}

fn pipeline_file() -> Vec<u8> {
    let mut desc = constant(1.0);
    desc.pipeline = vec![
        (
            StageKind::Block { a: 0.5, b: 1.0 },
            flowrt::write::write(&constant(10.0)).unwrap(),
        ),
        (
            StageKind::Refiner {
                from: 0.75,
                to: 1.0,
            },
            flowrt::write::write(&constant(100.0)).unwrap(),
        ),
        (
            StageKind::Decoder,
            flowrt::write::write(&doubler()).unwrap(),
        ),
    ];
    flowrt::write::write(&desc).unwrap()
}

#[test]
fn the_rule_picks_the_right_network_per_step() {
    let bytes = AlignedBytes::copy_from(&pipeline_file());
    let m = Model::from_bytes(bytes.as_slice()).unwrap();
    let p = m.pipeline().unwrap();
    assert_eq!(p.stages().count(), 3);
    assert_eq!(p.output_dim(), 4);
    // 4 Euler steps of 0.25: main (v=1), main, block (10), refiner (100).
    let mut x = [0.0f32; 2];
    let mut y = [0.0f32; 4];
    let need = flowrt::pipeline::pipeline_arena_bytes(&p, Method::Euler, 1).unwrap();
    let mut arena = AlignedBytes::zeroed(need);
    let grid = Uniform::unit(4).unwrap();
    let euler = |x: &mut [f32], y: &mut [f32], arena: &mut AlignedBytes| {
        flowrt::pipeline::sample_pipeline(
            &p,
            Method::Euler,
            &grid,
            x,
            Some(y),
            arena.as_mut_slice(),
        )
    };
    euler(&mut x, &mut y, &mut arena).unwrap();
    let want = 0.25 * (1.0 + 1.0 + 10.0 + 100.0);
    assert_eq!(x, [want, want]);
    assert_eq!(y, [want; 4]);
    // Too small an arena, a wrong output size: typed errors.
    let mut small = AlignedBytes::zeroed(need - 1);
    assert!(matches!(
        euler(&mut x, &mut y, &mut small),
        Err(Error::ArenaTooSmall { .. })
    ));
    let mut y3 = [0.0f32; 3];
    assert!(matches!(
        euler(&mut x, &mut y3, &mut arena),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn malformed_pipelines_are_typed_errors() {
    let file = pipeline_file();
    let (off, _) = section_range(&file, section::PIPELINE).unwrap();
    let stage = |i: usize| off + 8 + 32 * i;
    assert_invalid_patches(
        &file,
        [
            (off, 0u32.to_le_bytes().to_vec(), "1 to 8 stages"),
            (off, 9u32.to_le_bytes().to_vec(), "1 to 8 stages"),
            (off + 4, vec![1u8], "reserved"),
            (
                stage(0),
                7u16.to_le_bytes().to_vec(),
                "unknown pipeline stage kind",
            ),
            (stage(0) + 2, vec![1u8], "reserved"),
            (stage(0) + 8, f32::NAN.to_le_bytes().to_vec(), "not finite"),
            (stage(1) + 8, 1.5f32.to_le_bytes().to_vec(), "refiner"),
            (stage(0) + 16, 8u64.to_le_bytes().to_vec(), "misplaced"),
            (stage(0) + 16, 17u64.to_le_bytes().to_vec(), "misplaced"),
            (
                stage(2),
                0u16.to_le_bytes().to_vec(),
                "does not output a velocity",
            ),
        ],
    );
    // A nested file's length beyond the section, a bit flip inside a nested file.
    assert!(matches!(
        patched(&file, stage(0) + 24, (1u64 << 40).to_le_bytes().as_slice()),
        Err(Error::Truncated { .. })
    ));
    let nested = u64::from_le_bytes(file[stage(0) + 16..stage(0) + 24].try_into().unwrap());
    let inside = off + nested as usize + 200;
    let flipped = [file[inside] ^ 0x10];
    assert!(patched(&file, inside, &flipped).is_err());
    // A stage of another state dimension.
    let mut wide = ModelBuilder::default();
    let x = wide.input(&[Dim::Batch, Dim::Fixed(3)], Role::X);
    let _t = wide.input(&[Dim::Batch], Role::T);
    let o = wide.node(
        Op::Binary(BinaryOp::Add),
        &[x, x],
        &[Dim::Batch, Dim::Fixed(3)],
    );
    let mut desc = constant(1.0);
    desc.pipeline = vec![(
        StageKind::Block { a: 0.0, b: 1.0 },
        flowrt::write::write(&wide.finish(o)).unwrap(),
    )];
    assert!(
        matches!(flowrt::write::write(&desc), Err(Error::Invalid { what }) if what.contains("state dimension"))
    );
    // Truncations anywhere in the section never panic.
    for cut in (off..file.len()).step_by(37) {
        let a = AlignedBytes::copy_from(&file[..cut]);
        assert!(Model::from_bytes(a.as_slice()).is_err());
    }
}
