//! Hostile input (issue 17): malformed ONNX files, `.npy` files and options must end in one
//! clean `error:` line (exit status 1), never a panic, an abort or a silently wrong result.
//!
//! The ONNX cases mutate a committed fixture's `ModelProto` in memory, write it to a temp
//! dir and run `flowrt export` on it; each of them panicked inside tract before the checks
//! in `flowrt_export::validate` and the containment in `flowrt_export::contain`.

mod common;
use common::*;

use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

fn load(fixture: &str) -> ModelProto {
    let bytes = std::fs::read(fx(fixture)).expect("read fixture");
    ModelProto::decode(&bytes[..]).expect("decode fixture")
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().expect("graph")
}

fn node<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut NodeProto {
    graph(m)
        .node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Replaces the value of the `Constant` node `name` by an int64 tensor.
fn set_const_i64(m: &mut ModelProto, name: &str, dims: &[i64], values: &[i64]) {
    let n = node(m, name);
    assert_eq!(n.op_type, "Constant");
    n.attribute = vec![AttributeProto {
        name: "value".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32,
        t: Some(TensorProto {
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }];
}

/// Writes `m` to a temp dir, runs `flowrt export` on it, asserts a clean failure (exit 1, one
/// `error:` line, no "panicked") naming each of `needles`; returns the error line.
fn export_mutated(tag: &str, m: &ModelProto, needles: &[&str]) -> String {
    export_mutated_with(tag, m, &[], needles)
}

/// [`export_mutated`] with extra `export` flags.
fn export_mutated_with(tag: &str, m: &ModelProto, flags: &[&str], needles: &[&str]) -> String {
    let dir = TempDir::new(tag);
    let onnx = dir.path("model.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).expect("write mutated onnx");
    let frt = dir.path("model.frt");
    let mut parts: Vec<&dyn Arg> = vec![&"export", &onnx, &"-o", &frt];
    parts.extend(flags.iter().map(|f| f as &dyn Arg));
    let parts = &parts[..];
    let out = flowrt(parts);
    assert_eq!(out.status.code(), Some(1), "{}", describe(parts, &out));
    let e = fails_with(parts, needles);
    eprintln!("{tag}: {e}");
    assert!(!frt.exists(), "a failed export left {}", frt.display());
    e
}

#[test]
fn unsqueeze_axes_out_of_range() {
    // checker_fm: /Unsqueeze adds one axis to a scalar (axes [0]); axis 7 does not exist.
    let mut m = load("checker_fm/model.ts.onnx");
    set_const_i64(&mut m, "/Constant_6", &[1], &[7]);
    export_mutated("unsq", &m, &["/Unsqueeze", "Unsqueeze", "axis 7"]);
}

#[test]
fn squeeze_axes_out_of_range() {
    // digits_dit: /blocks.0/attn/Squeeze drops axis 0 of a rank-5 Split output.
    let mut m = load("digits_dit/model.ts.onnx");
    set_const_i64(&mut m, "/blocks.0/attn/Constant_7", &[1], &[9]);
    export_mutated("sq", &m, &["/blocks.0/attn/Squeeze", "axis 9"]);
}

#[test]
fn initializer_retyped_to_string() {
    let mut m = load("moons_icfm/model.ts.onnx");
    let t = graph(&mut m)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .expect("net.0.weight");
    t.data_type = DataType::String as i32;
    let mut cleared = m.clone();
    // Only re-typed: the float bytes stay in raw_data.
    export_mutated("str", &m, &["initializer `net.0.weight`", "string"]);
    // As a string tensor is stored (string_data), with no strings in it.
    graph(&mut cleared)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .unwrap()
        .raw_data
        .clear();
    export_mutated("str2", &cleared, &["initializer `net.0.weight`", "192"]);
}

#[test]
fn initializer_size_does_not_match_dims() {
    let mut m = load("moons_icfm/model.ts.onnx");
    let t = graph(&mut m)
        .initializer
        .iter_mut()
        .find(|t| t.name == "net.0.weight")
        .expect("net.0.weight");
    t.dims[0] = i64::MAX / 2;
    export_mutated("size", &m, &["net.0.weight", "dims"]);
}

#[test]
fn graph_output_without_producer() {
    let mut m = load("moons_icfm/model.ts.onnx");
    graph(&mut m).output[0].name = "nowhere".into();
    export_mutated(
        "out",
        &m,
        &["graph output `nowhere`", "no node produces it"],
    );
}

#[test]
fn node_input_without_producer() {
    let mut m = load("moons_icfm/model.ts.onnx");
    node(&mut m, "/net/net.1/Selu").input[0] = "ghost".into();
    export_mutated("in", &m, &["/net/net.1/Selu", "`ghost`", "no node"]);
}

#[test]
fn constant_gather_index_out_of_range() {
    // checker_fm: /Gather picks dim 0 of x's shape (rank 2); index 9 does not exist.
    let mut m = load("checker_fm/model.ts.onnx");
    set_const_i64(&mut m, "/Constant", &[], &[9]);
    export_mutated("gather", &m, &["/Gather", "index 9"]);
}

#[test]
fn conv_empty_bias_name_is_an_absent_bias() {
    // ONNX allows an optional input named "": Conv without a bias. The export must work (tract
    // panicked on it); here on digits_unet's first Conv.
    let mut m = load("digits_unet/model.ts.onnx");
    node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv").input[2] = String::new();
    let dir = TempDir::new("bias");
    let onnx = dir.path("model.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).unwrap();
    let frt = dir.path("model.frt");
    ok(&[&"export", &onnx, &"-o", &frt]);
    assert!(frt.is_file());
}

#[test]
fn transpose_empty_input_name() {
    let mut m = load("digits_dit/model.ts.onnx");
    node(&mut m, "/Transpose").input[0] = String::new();
    export_mutated("tr", &m, &["/Transpose", "input 0", "empty"]);
}

#[test]
fn transpose_perm_not_a_permutation() {
    let mut m = load("digits_dit/model.ts.onnx");
    let n = node(&mut m, "/Transpose");
    n.attribute[0].ints = vec![0, 2, 2];
    export_mutated("perm", &m, &["/Transpose", "perm"]);
}

#[test]
fn conv_strides_empty() {
    let mut m = load("digits_unet/model.ts.onnx");
    let n = node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv");
    n.attribute
        .iter_mut()
        .find(|a| a.name == "strides")
        .unwrap()
        .ints
        .clear();
    export_mutated("strides", &m, &["input_blocks.0.0/Conv", "strides", "2"]);
}

#[test]
fn conv_pads_wrong_length() {
    let mut m = load("digits_unet/model.ts.onnx");
    let n = node(&mut m, "/net/input_blocks.0/input_blocks.0.0/Conv");
    n.attribute
        .iter_mut()
        .find(|a| a.name == "pads")
        .unwrap()
        .ints = vec![1, 1, 1];
    export_mutated("pads", &m, &["input_blocks.0.0/Conv", "pads", "4"]);
}

#[test]
fn a_panic_inside_tract_is_contained() {
    // digits_dit: /blocks.1/attn/Constant feeds a shape computation the checks before tract
    // do not follow; with 99 in it tract's analysis indexes out of bounds, and the
    // containment turns the panic into an error naming the model and the stage.
    let mut m = load("digits_dit/model.ts.onnx");
    let dims = node(&mut m, "/blocks.1/attn/Constant").attribute[0]
        .t
        .as_ref()
        .unwrap()
        .dims
        .clone();
    let count: i64 = dims.iter().product();
    set_const_i64(
        &mut m,
        "/blocks.1/attn/Constant",
        &dims,
        &vec![99; count as usize],
    );
    export_mutated(
        "contained",
        &m,
        &[
            "the ONNX importer failed on",
            "model.onnx (analysis)",
            "(at ",
        ],
    );
}

/// A `.npy` v1 file: `header` (the dict text) padded as numpy does, then `data`.
fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

fn f32_header(shape: &str) -> String {
    format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}")
}

/// Runs `flowrt ARGS...` under `ulimit -v 2000000` (2 GB of address space); asserts exit
/// status 1 (no abort, no signal) and one `error:` line naming `needles`.
fn fails_under_ulimit(parts: &[&dyn Arg], needles: &[&str]) -> String {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2000000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_flowrt"))
        .args(args(parts));
    let out = cmd.output().expect("run sh");
    let what = describe(parts, &out);
    assert_eq!(out.status.code(), Some(1), "{what}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}");
    assert!(lines[0].starts_with("error:"), "{what}");
    assert_contains(lines[0], needles);
    lines[0].to_string()
}

#[test]
fn npy_shape_product_overflow() {
    // (4, 2^63 + 1, 2) with 8 floats: the element count wraps to 8 in u64 arithmetic.
    let (dir, frt) = temp_export("npyovf", "moons_icfm/model.ts.onnx", "");
    let noise = dir.path("noise.npy");
    let data: Vec<u8> = [0f32; 8].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(
        &noise,
        npy_bytes(&f32_header("(4, 9223372036854775809, 2)"), &data),
    )
    .unwrap();
    let out = dir.path("out.npy");
    sample_fails(&frt, &noise, &[], &out, &["noise.npy", "shape", "2^64"]);
    assert!(!out.exists());
}

#[test]
fn npy_data_length_must_match_the_shape() {
    let (dir, frt) = temp_export("npylen", "moons_icfm/model.ts.onnx", "");
    let out = dir.path("out.npy");
    for n in [7usize, 9] {
        let noise = dir.path(&format!("noise{n}.npy"));
        let data: Vec<u8> = vec![0f32; n].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&noise, npy_bytes(&f32_header("(4, 2)"), &data)).unwrap();
        sample_fails(&frt, &noise, &[], &out, &["needs 32 bytes of data"]);
    }
    // Labels and grid files go through the same reader.
    let grid = dir.path("grid.npy");
    std::fs::write(&grid, npy_bytes(&f32_header("(3,)"), &[0u8; 8])).unwrap();
    let noise = fx("moons_icfm/noise.npy");
    sample_fails(
        &frt,
        &noise,
        &[&"--grid-file", &grid],
        &out,
        &["grid.npy", "needs 12 bytes"],
    );
}

#[test]
fn npy_v2_header_length_beyond_the_file_under_ulimit() {
    // A v2 header claiming 4 GB: allocated as is, that aborted under a 2 GB address limit.
    let (dir, frt) = temp_export("npyhdr", "moons_icfm/model.ts.onnx", "");
    let noise = dir.path("noise.npy");
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    bytes.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (4, 2), }\n");
    std::fs::write(&noise, &bytes).unwrap();
    let out = dir.path("out.npy");
    fails_under_ulimit(
        &[&sample_args(&frt, &noise, &[], &out)],
        &["noise.npy", "header claims 4294967280 bytes"],
    );
    assert!(!out.exists());
}

#[test]
fn inspect_dev_zero_is_capped() {
    let start = std::time::Instant::now();
    fails_under_ulimit(
        &[&"inspect", &"/dev/zero"],
        &["/dev/zero", "larger than the 1073741824-byte limit"],
    );
    eprintln!("inspect /dev/zero failed after {:?}", start.elapsed());
    fails_under_ulimit(
        &[&"sample", &"/dev/zero", &"--seed 1 --num 2 -o /dev/null"],
        &["/dev/zero", "limit"],
    );
    // ONNX is read up to protobuf's 2 GiB; under the 2 GB address limit the buffer cannot
    // grow that far, and that is an error too, not an abort.
    let dir = TempDir::new("zero");
    fails_under_ulimit(
        &[&"export", &"/dev/zero", &"-o", &dir.path("z.frt")],
        &["/dev/zero"],
    );
    assert!(!dir.path("z.frt").exists());
}

/// The names in `dir`, sorted (to see that a failed run left nothing behind).
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn sample_checks_every_output_before_the_run() {
    // The samples file used to be written before --trajectory's missing folder failed.
    let (dir, frt) = temp_export("atomic_sample", "moons_icfm/model.ts.onnx", "");
    let noise = fx("moons_icfm/noise.npy");
    let out = dir.path("out.npy");
    let before = listing(&dir);
    let traj = dir.path("missing_dir/x.npy");
    sample_fails(
        &frt,
        &noise,
        &[&"--trajectory", &traj],
        &out,
        &["--trajectory", "missing_dir", "does not exist"],
    );
    let png = dir.path("missing_dir/x.png");
    sample_fails(
        &frt,
        &noise,
        &[&"--png", &png],
        &out,
        &["--png", "missing_dir"],
    );
    sample_fails(&frt, &noise, &[], &dir, &["-o", "is a folder"]);
    assert_eq!(listing(&dir), before, "a failed run left files");
    // A good samples file is not clobbered by a run that fails later (bad noise file).
    sample_ok(&frt, &noise, &[], &out);
    let good = std::fs::read(&out).unwrap();
    let bad = dir.path("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY\x01\x00junk").unwrap();
    sample_fails(&frt, &bad, &[], &out, &["bad.npy"]);
    assert_eq!(std::fs::read(&out).unwrap(), good);
    let mut want = before.clone();
    want.extend(["bad.npy".to_string(), "out.npy".to_string()]);
    want.sort();
    assert_eq!(listing(&dir), want);
}

#[test]
fn a_failed_export_leaves_the_old_file() {
    let (dir, frt) = temp_export("atomic_export", "moons_icfm/model.ts.onnx", "");
    let good = std::fs::read(&frt).unwrap();
    let mut m = load("moons_icfm/model.ts.onnx");
    graph(&mut m).output[0].name = "nowhere".into();
    let onnx = dir.path("bad.onnx");
    std::fs::write(&onnx, m.encode_to_vec()).unwrap();
    fails_with(&[&"export", &onnx, &"-o", &frt], &["nowhere"]);
    assert_eq!(
        std::fs::read(&frt).unwrap(),
        good,
        "the good .frt was clobbered"
    );
    fails_with(
        &[
            &"export",
            &fx("moons_icfm/model.ts.onnx"),
            &"-o",
            &dir.path("no/m.frt"),
        ],
        &["-o", "does not exist"],
    );
    let mut names = listing(&dir);
    names.sort();
    assert_eq!(names, ["bad.onnx", "model.frt"]);
}

#[test]
fn export_refuses_bad_solver_defaults() {
    let dir = TempDir::new("opts_export");
    let frt = dir.path("m.frt");
    let onnx = "moons_icfm/model.ts.onnx";
    // Each used to be baked into the file silently (sampling then failed or went wrong).
    for (flags, needles) in [
        (
            "--grid 0,0.5,0.3,1",
            &["--grid 0,0.5,0.3,1", "not strictly monotone"][..],
        ),
        ("--grid 0,0,1", &["not strictly monotone"][..]),
        ("--grid 1,0.5,0", &["runs from 1 to 0", "noise end (0)"][..]),
        (
            "--time sigma --grid 0,1",
            &["runs from 0 to 1", "noise end (1)"][..],
        ),
        ("--grid 0.5,1.5", &["outside the model's time range"][..]),
        ("--grid shift:-1", &["shift:-1", "positive"][..]),
        ("--grid shift:0", &["positive"][..]),
        ("--steps 100000000", &["--steps 100000000", "2^24"][..]),
        ("--steps 0", &["--steps"][..]),
        ("--guidance NaN", &["--guidance", "finite"][..]),
        ("--guidance inf", &["--guidance", "finite"][..]),
        ("--method bogus", &["--method bogus"][..]),
        ("--null-label 3", &["--null-label 3", "no label input"][..]),
    ] {
        let out = flowrt(&[&"export", &fx(onnx), &"-o", &frt, &flags]);
        assert_eq!(out.status.code(), Some(1), "{flags}");
        export_fails(onnx, &frt, flags, needles);
        assert!(!frt.exists(), "{flags}: a file was written");
    }
    export_fails(
        "moons_cfg/model.ts.onnx",
        &frt,
        "--null-label 99 --guidance 2",
        &["--null-label 99", "3 classes"],
    );
    assert!(!frt.exists());
    // Good grids still export.
    export_fx(onnx, &frt, "--grid 0,0.1,0.25,0.45,0.7,0.9,1");
    export_fx(onnx, &frt, "--time sigma --grid 1,0.5,0");
}

#[test]
fn sample_refuses_bad_options() {
    let (dir, frt) = temp_export("opts_sample", "moons_icfm/model.ts.onnx", "");
    let noise = fx("moons_icfm/noise.npy");
    let out = dir.path("out.npy");
    for (flags, needles) in [
        ("--grid 1,0.5,0", &["runs from 1 to 0"][..]),
        ("--grid 0.5,1.5", &["outside the model's time range"][..]),
        ("--grid 0,0.5,0.3,1", &["not strictly monotone"][..]),
        ("--rtol NaN", &["--rtol NaN", "finite"][..]),
        ("--atol=-1", &["--atol -1", "non-negative"][..]),
        ("--rtol 0 --atol 0", &["both 0"][..]),
        ("--steps 100000000", &["--steps 100000000", "2^24"][..]),
        ("--step-size 0", &["step size"][..]),
        ("--method dopri5 --max-steps 0", &["--max-steps 0"][..]),
        // moons_icfm needs more than 3 attempted steps at the default tolerances.
        (
            "--method dopri5 --max-steps 3",
            &["dopri5 needed more than max_steps steps"][..],
        ),
    ] {
        sample_fails(&frt, &noise, &[&flags], &out, needles);
        assert!(!out.exists(), "{flags}: a file was written");
    }
    // On the sigma axis (1 = noise) a descending grid is the right way round.
    let (_d2, sig) = temp_export(
        "opts_sigma",
        "moons_icfm/model.ts.onnx",
        "--time sigma --grid 1,0.5,0",
    );
    sample_ok(&sig, &noise, &[], &out);
    sample_fails(
        &sig,
        &noise,
        &[&"--grid 0,0.5,1"],
        &dir.path("o2.npy"),
        &["runs from 0 to 1"],
    );
}

#[test]
fn layer_norm_axis_out_of_range_does_not_hang() {
    // tract-onnx's LayerNorm rules loop for an axis below -rank (the export never ended);
    // digits_dit's /blocks.1/norm2 input rank is not followed by the checks, so this is the
    // rank bound flowrt itself has (MAX_RANK).
    let mut m = load("digits_dit/model.ts.onnx");
    let n = node(&mut m, "/blocks.1/norm2/LayerNormalization");
    n.attribute.iter_mut().find(|a| a.name == "axis").unwrap().i = -99;
    export_mutated(
        "lnaxis",
        &m,
        &["/blocks.1/norm2/LayerNormalization", "axis -99"],
    );
    // With a known input rank (digits_dit's first LayerNormalization follows the patch
    // embedding's Transpose) the bound is the rank itself.
    let mut m = load("digits_dit/model.ts.onnx");
    let name = graph(&mut m)
        .node
        .iter()
        .find(|n| n.op_type == "Softmax")
        .map(|n| n.name.clone())
        .unwrap();
    node(&mut m, &name)
        .attribute
        .iter_mut()
        .find(|a| a.name == "axis")
        .unwrap()
        .i = -99;
    export_mutated("smaxis", &m, &[&name, "axis -99"]);
}

#[test]
fn layer_norm_default_axis_on_a_scalar_is_refused() {
    // Found by fuzz/onnx_import (fuzz/findings/onnx_import-timeout-layernorm-scalar): a node
    // retyped to LayerNormalization whose input is a rank-0 Constant, no `axis` attribute
    // (default -1). tract-onnx's LayerNorm rules loop on it; the export used to end only at
    // the import deadline. The checks now apply the default axis.
    let mut m = load("moons_opzoo/model.ts.onnx");
    let n = node(&mut m, "/Mul_2");
    n.op_type = "LayerNormalization".into();
    n.input = vec!["/Constant_4_output_0".into(), "/Log_output_0".into()];
    let started = std::time::Instant::now();
    export_mutated(
        "lnscalar",
        &m,
        &["/Mul_2", "axis -1 is out of range for input rank 0"],
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn a_graph_out_of_topological_order_is_refused() {
    // Found by fuzz/onnx_import (fuzz/findings/onnx_import-timeout-unsorted-layernorm):
    // moons_opzoo with /Pow fed by /Constant_6 (a later node) and /Mul_2 retyped to a LayerNormalization of
    // the scalar chain after it. The rank checks follow the node order, so the scalar's rank
    // was unknown and tract's LayerNorm rules looped until the import deadline.
    let mut m = load("moons_opzoo/model.ts.onnx");
    node(&mut m, "/Pow").input[0] = "/Constant_6_output_0".into();
    let n = node(&mut m, "/Mul_2");
    n.op_type = "LayerNormalization".into();
    n.input = vec!["/Log_output_0".into(), "/Constant_4_output_0".into()];
    let started = std::time::Instant::now();
    export_mutated(
        "unsorted",
        &m,
        &["/Pow", "`/Constant_6_output_0` is produced by a later node"],
    );
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn an_importer_loop_is_given_up_after_the_import_timeout() {
    // axis -4 on a rank-3 input whose rank the checks do not follow: tract-onnx 0.23.9's
    // LayerNorm rules loop in the analysis (the export ran until killed). The import runs
    // under a deadline; the CLI exits with a one-line error, which ends the stuck thread.
    let mut m = load("digits_dit/model.ts.onnx");
    let n = node(&mut m, "/blocks.1/norm2/LayerNormalization");
    n.attribute.iter_mut().find(|a| a.name == "axis").unwrap().i = -4;
    let started = std::time::Instant::now();
    export_mutated_with(
        "lnloop",
        &m,
        &["--import-timeout", "3"],
        &["did not finish", "within 3 s", "stuck in analysis"],
    );
    // Two exports run (exit code, then the message): each gives up after 3 s.
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
}
