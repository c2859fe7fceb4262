//! `flowrt sample --png`: the real binary on a committed 2-D fixture (export to a temp .frt,
//! sample with --png), the PNG decoded again; and the error for an unwritable path.

mod common;
use common::*;

/// Decodes an 8-bit RGB PNG: (width, height, rgb bytes).
fn read_png(p: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("PNG buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn sample_png_scatter_of_a_2d_model() {
    let (dir, frt) = temp_export("png", "moons_icfm/model.ts.onnx", "");
    let out = dir.path("x.npy");
    let png = dir.path("x.png");
    // Sampling with the scatter plot written to `png`.
    let cmd = |png: &std::path::Path| {
        let flags = "--seed 0 --num 256 --method rk4-38 --steps 8 -o";
        args(&[&"sample", &frt, &flags, &out, &"--png", &png])
    };
    let stdout = ok(&[&cmd(&png)]);
    assert_contains(&stdout, &["png: scatter of 256 of 256 points", s(&png)]);
    assert!(out.is_file());
    let (w, h, rgb) = read_png(&png);
    assert_eq!((w, h), (512, 512));
    assert_eq!(rgb.len(), 512 * 512 * 3);
    // Pixels whose channels all pass `test`.
    let count = |test: fn(u8) -> bool| {
        rgb.chunks_exact(3)
            .filter(|p| p.iter().all(|&v| test(v)))
            .count()
    };
    let dark = count(|v| v < 64);
    let white = count(|v| v == 255);
    // 256 dots of 3 x 3 px, some overlapping; mostly background.
    assert!(dark >= 300, "only {dark} dark pixels");
    assert!(white > 512 * 512 / 2, "only {white} white pixels");

    // An unwritable path: one clean error line naming it.
    let bad = dir.path("no-such-dir").join("x.png");
    fails_with(&[&cmd(&bad)], &[s(&bad)]);
}

/// An image model: the digits UNet, one sample per class (`--label-cycle 10`), drawn as a
/// grid of 8×8 images; the same labels from a file give the same samples.
#[test]
fn sample_png_grid_of_an_image_model_with_cycled_labels() {
    let (dir, frt) = temp_export("png-grid", "digits_unet/model.dynamo.onnx", "");
    let (out, png) = (dir.path("x.npy"), dir.path("x.png"));
    let common = "--seed 1 --num 10 --method euler --steps 2";
    let cycled: &[&dyn Arg] = &[&"--label-cycle 10 -o", &out, &"--png", &png, &common];
    let stdout = ok(&[&"sample", &frt, &cycled]);
    assert!(stdout.contains("png: 10 images [1, 8, 8]"), "{stdout}");
    let (w, h, rgb) = read_png(&png);
    // 4 columns x 3 rows of 8x8 images upscaled (at least 64 px per cell) with 2 px gaps.
    assert!(w >= 4 * 64 && h >= 3 * 64 && w > h, "{w} x {h}");
    assert_eq!(rgb.len(), (w * h * 3) as usize);
    assert!(rgb.iter().any(|&v| v > 200) && rgb.iter().any(|&v| v < 50));
    // Labels 0..9 from a file: the same samples.
    let labels = dir.path("y.npy");
    flowrt_export::npy::write_i64(&labels, &(0..10).collect::<Vec<i64>>()).unwrap();
    let out2 = dir.path("x2.npy");
    ok(&[&"sample", &frt, &"--label", &labels, &"-o", &out2, &common]);
    assert_eq!(read_npy(&out).0, read_npy(&out2).0);
    // --label-cycle on a model without labels is an error naming the flag.
    let moons = export_in(&dir, "m.frt", "moons_icfm/model.ts.onnx", "");
    let flags = "--seed 0 --num 4 --label-cycle 3 -o";
    fails_with(
        &[&"sample", &moons, &flags, &out2],
        &["--label-cycle", "no label input"],
    );
}

/// `--trajectory-png` on the 2-D moons model: the paths of the first 64 of 100 samples, their
/// start (noise) and end (sample) markers exactly where the states of the same run's
/// `--trajectory` .npy map on the plot's documented frame (fitted to every drawn state with
/// a 5% margin, y upwards, 512 px).
#[test]
fn sample_trajectory_png_paths_of_a_2d_model() {
    const START: [u8; 3] = [20, 70, 200];
    const END: [u8; 3] = [200, 20, 20];
    let (dir, frt) = temp_export("traj-png", "moons_reflow/model.ts.onnx", "");
    let (out, traj, png) = (dir.path("x.npy"), dir.path("t.npy"), dir.path("t.png"));
    let flags = "--seed 3 --num 100 --method rk4-38 --steps 8 -o";
    let cmd = |png: &std::path::Path| {
        args(&[
            &"sample",
            &frt,
            &flags,
            &out,
            &"--trajectory",
            &traj,
            &"--trajectory-png",
            &png,
        ])
    };
    let stdout = ok(&[&cmd(&png)]);
    assert_contains(
        &stdout,
        &["trajectory png: paths of 64 of 100 samples", s(&png)],
    );
    let (states, shape) = read_npy(&traj);
    assert_eq!(shape, [9, 100, 2]);
    // The last state is the samples.
    assert_eq!(&states[8 * 200..], &read_npy(&out).0[..]);
    let (w, h, rgb) = read_png(&png);
    assert_eq!((w, h), (512, 512));
    let at = |k: usize, i: usize| (states[(k * 100 + i) * 2], states[(k * 100 + i) * 2 + 1]);
    let drawn: Vec<(f32, f32)> = (0..9)
        .flat_map(|k| (0..64).map(move |i| (k, i)))
        .map(|(k, i)| at(k, i))
        .collect();
    let fit = |v: Vec<f32>| {
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    };
    let (x0, x1) = fit(drawn.iter().map(|p| p.0).collect());
    let (y0, y1) = fit(drawn.iter().map(|p| p.1).collect());
    let pixel = |(x, y): (f32, f32)| {
        let c = ((x - x0) / (x1 - x0) * 511.0).round() as usize;
        let r = ((y1 - y) / (y1 - y0) * 511.0).round() as usize;
        (c, r)
    };
    let px = |(c, r): (usize, usize)| {
        let i = (r * 512 + c) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let ends: Vec<(usize, usize)> = (0..64).map(|i| pixel(at(8, i))).collect();
    for (i, &e) in ends.iter().enumerate() {
        assert_eq!(px(e), END, "end of path {i} at {e:?}");
    }
    for i in 0..64 {
        let p = pixel(at(0, i));
        // Ends are drawn over starts: a start within 2 px of an end shows the end's colour.
        let covered = ends
            .iter()
            .any(|e| e.0.abs_diff(p.0) <= 2 && e.1.abs_diff(p.1) <= 2);
        assert_eq!(
            px(p),
            if covered { END } else { START },
            "start of path {i} at {p:?}"
        );
    }
    // Lines between them: pixels neither background, axis nor a marker colour.
    let lines = rgb
        .chunks_exact(3)
        .filter(|p| ![[255; 3], [210; 3], START, END].contains(&[p[0], p[1], p[2]]))
        .count();
    assert!(lines > 64 * 20, "only {lines} line pixels");

    // An unwritable --trajectory-png: one clean error naming it, nothing written.
    let _ = std::fs::remove_file(&out);
    let bad = dir.path("no-such-dir").join("t.png");
    fails_with(&[&cmd(&bad)], &["--trajectory-png", s(&bad)]);
    assert!(!out.exists());
    // Not with the SDE.
    let e = fails(&[
        &"sample",
        &frt,
        &"--seed 0 --num 2 --sde const:0.5 -o",
        &out,
        &"--trajectory-png",
        &png,
    ]);
    assert_contains(&e, &["--trajectory-png", "--sde"]);
    // A model whose state is not 2-D: a clear error before anything runs.
    let digits = export_in(&dir, "d.frt", "digits_unet/model.dynamo.onnx", "");
    let e = fails(&[
        &"sample",
        &digits,
        &"--seed 0 --num 2 --label-value 1 -o",
        &out,
        &"--trajectory-png",
        &png,
    ]);
    assert_contains(&e, &["--trajectory-png", "2-D", "64 values"]);
    assert!(!out.exists());
}
