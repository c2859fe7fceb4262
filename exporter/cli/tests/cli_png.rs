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
