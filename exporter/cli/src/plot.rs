//! Quick looks at samples: a terminal density plot of 2-D samples (`flowrt sample --ascii`),
//! PNG images (`flowrt sample --png`): an image grid for `[C, H, W]` rows, a scatter plot
//! of the first two coordinates otherwise, and the paths of 2-D samples from noise to data
//! (`flowrt sample --trajectory-png`). The renderers are pure functions returning 8-bit
//! RGB buffers (row-major, 3 bytes a pixel); [`stage_png`] encodes one.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use flowrt_export::output::Staged;

/// Renders the first two coordinates of `rows` samples (`dim` values each) as a
/// `width` × `height` character density plot, framed, with the axis ranges below it.
/// Returns an empty string when there is nothing to draw.
pub fn ascii_scatter(data: &[f32], dim: usize, width: usize, height: usize) -> String {
    const RAMP: &[u8] = b" .:-=+*#%@";
    if dim < 2 || data.len() < dim || width == 0 || height == 0 {
        return String::new();
    }
    let points: Vec<(f32, f32)> = data
        .chunks_exact(dim)
        .map(|r| (r[0], r[1]))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return String::new();
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &(x, y) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let (sx, sy) = ((x1 - x0).max(1e-6), (y1 - y0).max(1e-6));
    let mut counts = vec![0usize; width * height];
    for &(x, y) in &points {
        let c = (((x - x0) / sx) * (width - 1) as f32).round() as usize;
        let r = (((y1 - y) / sy) * (height - 1) as f32).round() as usize;
        counts[r.min(height - 1) * width + c.min(width - 1)] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(1).max(1) as f32;
    let mut out = format!("+{}+\n", "-".repeat(width));
    for row in counts.chunks_exact(width) {
        out.push('|');
        for &n in row {
            let level = if n == 0 {
                0
            } else {
                1 + ((n as f32 / max).sqrt() * (RAMP.len() - 2) as f32) as usize
            };
            out.push(RAMP[level.min(RAMP.len() - 1)] as char);
        }
        out.push_str("|\n");
    }
    out.push_str(&format!("+{}+\n", "-".repeat(width)));
    out.push_str(&format!(
        "x: [{x0:.2}, {x1:.2}]  y: [{y0:.2}, {y1:.2}]  ({} points)\n",
        points.len()
    ));
    out
}

/// Pixel value of the gaps between (and the empty cells after) the image-grid cells.
const GAP_RGB: [u8; 3] = [255, 255, 255];
/// Gap between grid cells, in pixels.
const GAP: usize = 2;
/// An image-grid cell's longer side is upscaled to at least this many pixels.
const MIN_CELL: usize = 64;
/// The colour of a non-finite sample value in the image grid.
const BAD_RGB: [u8; 3] = [255, 0, 0];
/// Side of the scatter plot, in pixels.
pub const SCATTER_SIZE: usize = 512;
const SCATTER_BG: [u8; 3] = [255, 255, 255];
const SCATTER_AXIS: [u8; 3] = [210, 210, 210];
const SCATTER_DOT: [u8; 3] = [20, 20, 20];

/// Maps a sample value to an 8-bit intensity: `[-1, 1]` linearly onto `[0, 255]`, clamped
/// outside it (the data range torchcfm image models are trained on). `None` for NaN / ±inf.
pub fn to_u8(v: f32) -> Option<u8> {
    if !v.is_finite() {
        return None;
    }
    Some(((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8)
}

/// Draws `n` samples of shape `[c, h, w]` (C order, `data.len() >= n * c * h * w`) as one
/// RGB image: a grid of `ceil(sqrt(n))` columns, every sample upscaled (nearest neighbour) by
/// the smallest integer factor that makes a cell's longer side at least 64 px, 2-px white
/// gaps between cells (and white empty cells after the last sample).
///
/// Values are assumed to be in `[-1, 1]`, as torchcfm image models are trained, and mapped
/// onto `[0, 255]` with clamping ([`to_u8`]); a non-finite value is drawn as a red pixel.
/// `c == 1` is drawn as grayscale and `c == 3` as RGB (channel 0 red); any other channel
/// count (2, 4, ...) falls back to drawing channel 0 alone as grayscale.
///
/// Returns `(width, height, rgb)`; `(0, 0, [])` when `n`, `c`, `h` or `w` is zero.
pub fn image_grid(data: &[f32], n: usize, c: usize, h: usize, w: usize) -> (usize, usize, Vec<u8>) {
    if n == 0 || c == 0 || h == 0 || w == 0 {
        return (0, 0, Vec::new());
    }
    let scale = MIN_CELL.div_ceil(h.max(w)).max(1);
    let (ch, cw) = (h * scale, w * scale);
    let cols = (1..=n).find(|k| k * k >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let width = cols * cw + (cols - 1) * GAP;
    let height = rows * ch + (rows - 1) * GAP;
    let mut rgb = canvas(GAP_RGB, width, height);
    let plane = h * w;
    for (k, sample) in data.chunks_exact(c * plane).take(n).enumerate() {
        let (x0, y0) = ((k % cols) * (cw + GAP), (k / cols) * (ch + GAP));
        for y in 0..h {
            for x in 0..w {
                let at = y * w + x;
                let px = if c == 3 {
                    match (
                        to_u8(sample[at]),
                        to_u8(sample[plane + at]),
                        to_u8(sample[2 * plane + at]),
                    ) {
                        (Some(r), Some(g), Some(b)) => [r, g, b],
                        _ => BAD_RGB,
                    }
                } else {
                    to_u8(sample[at]).map_or(BAD_RGB, |v| [v, v, v])
                };
                for dy in 0..scale {
                    let row = (y0 + y * scale + dy) * width;
                    for dx in 0..scale {
                        let i = (row + x0 + x * scale + dx) * 3;
                        rgb[i..i + 3].copy_from_slice(&px);
                    }
                }
            }
        }
    }
    (width, height, rgb)
}

/// Draws the first two coordinates of `rows` of `dim` values (`dim >= 2`) as a 512 × 512
/// RGB scatter plot: white background, a dark 3 × 3-px dot per point, axis ranges fitted to
/// the points with a 5% margin on every side (±1 around a coordinate that does not vary), and
/// light grey axis lines at x = 0 / y = 0 where 0 is in range; y grows upwards. Rows with a
/// non-finite coordinate are skipped. Returns `(width, height, rgb, points drawn)`.
pub fn scatter_png(data: &[f32], dim: usize) -> (usize, usize, Vec<u8>, usize) {
    let size = SCATTER_SIZE;
    let points: Vec<(f32, f32)> = if dim < 2 {
        Vec::new()
    } else {
        data.chunks_exact(dim)
            .map(|r| (r[0], r[1]))
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let frame = Frame::fit(&points, size);
    let mut rgb = frame.canvas();
    for &(x, y) in &points {
        frame.dot(&mut rgb, frame.pixel(x, y), 1, SCATTER_DOT);
    }
    (size, size, rgb, points.len())
}

/// A square plot area mapping data coordinates to pixels: axis ranges fitted to the points
/// with a 5% margin on every side (±1 around a coordinate that does not vary, [-1, 1] for
/// no points); y grows upwards.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Side in pixels.
    pub size: usize,
    /// The x range.
    pub x: (f32, f32),
    /// The y range.
    pub y: (f32, f32),
}

impl Frame {
    /// The frame of `points` (finite) on a `size` × `size` image.
    pub fn fit(points: &[(f32, f32)], size: usize) -> Frame {
        let range = |vals: &mut dyn Iterator<Item = f32>| -> (f32, f32) {
            let (lo, hi) = vals.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
            if lo > hi {
                (-1.0, 1.0)
            } else if hi - lo > 0.0 && (hi - lo).is_finite() {
                let m = 0.05 * (hi - lo);
                (lo - m, hi + m)
            } else {
                (lo - 1.0, hi + 1.0)
            }
        };
        Frame {
            size,
            x: range(&mut points.iter().map(|p| p.0)),
            y: range(&mut points.iter().map(|p| p.1)),
        }
    }

    /// The pixel `(column, row)` of the point `(x, y)`, clamped to the image.
    pub fn pixel(&self, x: f32, y: f32) -> (usize, usize) {
        let last = (self.size - 1) as f32;
        let (x0, x1) = self.x;
        let (y0, y1) = self.y;
        let c = ((x - x0) / (x1 - x0) * last).round().clamp(0.0, last) as usize;
        let r = ((y1 - y) / (y1 - y0) * last).round().clamp(0.0, last) as usize;
        (c, r)
    }

    /// A white image with light grey axis lines at x = 0 / y = 0 where 0 is in range.
    pub fn canvas(&self) -> Vec<u8> {
        let size = self.size;
        let mut rgb = canvas(SCATTER_BG, size, size);
        let (zc, zr) = self.pixel(0.0, 0.0);
        if self.x.0 <= 0.0 && 0.0 <= self.x.1 {
            (0..size).for_each(|r| put(&mut rgb, size, (zc, r), SCATTER_AXIS));
        }
        if self.y.0 <= 0.0 && 0.0 <= self.y.1 {
            (0..size).for_each(|c| put(&mut rgb, size, (c, zr), SCATTER_AXIS));
        }
        rgb
    }

    /// Fills the square of `radius` pixels around `at` (clipped to the image).
    pub fn dot(&self, rgb: &mut [u8], at: (usize, usize), radius: usize, px: [u8; 3]) {
        let (c, r) = at;
        let last = self.size - 1;
        for rr in r.saturating_sub(radius)..=(r + radius).min(last) {
            for cc in c.saturating_sub(radius)..=(c + radius).min(last) {
                put(rgb, self.size, (cc, rr), px);
            }
        }
    }

    /// Draws the straight line from pixel `a` to pixel `b` (Bresenham), both ends included.
    pub fn line(&self, rgb: &mut [u8], a: (usize, usize), b: (usize, usize), px: [u8; 3]) {
        let (mut x, mut y) = (a.0 as i64, a.1 as i64);
        let (x1, y1) = (b.0 as i64, b.1 as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            put(rgb, self.size, (x as usize, y as usize), px);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

/// Sets pixel `(column, row)` of a `width`-px-wide RGB image.
fn put(rgb: &mut [u8], width: usize, at: (usize, usize), px: [u8; 3]) {
    let i = (at.1 * width + at.0) * 3;
    rgb[i..i + 3].copy_from_slice(&px);
}

/// At most this many samples' paths are drawn by [`trajectory_png`].
pub const TRAJECTORY_PATHS: usize = 64;
/// The start (noise end) marker of a path.
pub const PATH_START: [u8; 3] = [20, 70, 200];
/// The end (data end) marker of a path.
pub const PATH_END: [u8; 3] = [200, 20, 20];
/// The colour of a path's first segment; later ones shade towards [`PATH_LAST`].
const PATH_FIRST: [u8; 3] = [140, 170, 240];
/// The colour of a path's last segment.
const PATH_LAST: [u8; 3] = [240, 150, 110];
/// Markers are (2 * this + 1)-px squares.
pub const MARKER_RADIUS: usize = 2;

/// Draws the paths of the first `min(N, 64)` samples of a 2-D model through time:
/// `states` is a trajectory `[T, N, 2]` (`T` recorded states, the noise first), drawn as a
/// 512 × 512 RGB image framed like [`scatter_png`] (fitted to every drawn state, 5% margin,
/// grey axes at 0, y upwards). Each path is a polyline shaded by time from light blue (the
/// first step) to light orange (the last), with a 5 × 5-px blue square at its start (the
/// noise, [`PATH_START`]) and a red one at its end (the sample, [`PATH_END`]); the starts are
/// drawn over every line and the ends over everything. A path with a non-finite state is
/// left out. Returns `(width, height, rgb, paths drawn)`.
pub fn trajectory_png(states: &[f32], t: usize, n: usize) -> (usize, usize, Vec<u8>, usize) {
    let size = SCATTER_SIZE;
    let shown = n.min(TRAJECTORY_PATHS);
    let at = |k: usize, i: usize| -> (f32, f32) {
        let j = (k * n + i) * 2;
        match states.get(j..j + 2) {
            Some(p) => (p[0], p[1]),
            None => (f32::NAN, f32::NAN),
        }
    };
    let paths: Vec<Vec<(f32, f32)>> = (0..shown)
        .map(|i| (0..t).map(|k| at(k, i)).collect::<Vec<_>>())
        .filter(|p: &Vec<(f32, f32)>| p.iter().all(|(x, y)| x.is_finite() && y.is_finite()))
        .collect();
    let all: Vec<(f32, f32)> = paths.iter().flatten().copied().collect();
    let frame = Frame::fit(&all, size);
    let mut rgb = frame.canvas();
    let segments = t.saturating_sub(1).max(1);
    for path in &paths {
        for (k, w) in path.windows(2).enumerate() {
            let f = k as f32 / (segments - 1).max(1) as f32;
            let px = std::array::from_fn(|c| {
                (f32::from(PATH_FIRST[c]) * (1.0 - f) + f32::from(PATH_LAST[c]) * f).round() as u8
            });
            frame.line(
                &mut rgb,
                frame.pixel(w[0].0, w[0].1),
                frame.pixel(w[1].0, w[1].1),
                px,
            );
        }
    }
    for (pick, colour) in [(0, PATH_START), (t.saturating_sub(1), PATH_END)] {
        for path in &paths {
            if let Some(&(x, y)) = path.get(pick) {
                frame.dot(&mut rgb, frame.pixel(x, y), MARKER_RADIUS, colour);
            }
        }
    }
    (size, size, rgb, paths.len())
}

/// Checks that `--trajectory-png` can draw the paths of a model with `state_dim` values a
/// state (2-D models only).
pub fn check_trajectory_png(state_dim: usize) -> Result<()> {
    if state_dim != 2 {
        bail!(
            "--trajectory-png draws the paths of 2-D samples; this model's state has \
             {state_dim} values (use --trajectory to save the states as .npy)"
        );
    }
    Ok(())
}

/// Draws a `[t, n, 2]` trajectory ([`trajectory_png`]) and stages it at `path` as a PNG.
/// Returns the number of paths drawn.
pub fn stage_trajectory_png(
    staged: &mut Staged,
    path: &Path,
    states: &[f32],
    t: usize,
    n: usize,
) -> Result<usize> {
    let (w, h, rgb, drawn) = trajectory_png(states, t, n);
    stage_png(staged, path, w, h, &rgb)?;
    Ok(drawn)
}

/// What [`samples_png`] drew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drawn {
    /// An image grid of `n` samples `[c, h, w]`, `width` × `height` px.
    Grid {
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        width: usize,
        height: usize,
    },
    /// A scatter plot of `points` finite points (of `rows`).
    Scatter { points: usize, rows: usize },
}

impl std::fmt::Display for Drawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drawn::Grid {
                n,
                c,
                h,
                w,
                width,
                height,
            } => {
                write!(f, "{n} images [{c}, {h}, {w}] as a {width} x {height} grid")?;
                if *c != 1 && *c != 3 {
                    write!(f, " (channel 0 of {c}, grayscale)")?;
                }
                Ok(())
            }
            Drawn::Scatter { points, rows } => {
                write!(
                    f,
                    "scatter of {points} of {rows} points (first two coordinates)"
                )
            }
        }
    }
}

/// Checks that rows of shape `row_shape` (the model output's dims without the batch dim) can
/// be drawn by [`samples_png`]: `[C, H, W]` rows as an image grid, any other row with at
/// least two values as a scatter of its first two (flattened) coordinates.
pub fn check_png_rows(row_shape: &[usize]) -> Result<()> {
    let len: usize = row_shape.iter().product();
    if row_shape.len() != 3 && len < 2 {
        bail!(
            "--png draws [C, H, W] images or the first two coordinates of each sample; \
             these samples have {len} value(s) a row"
        );
    }
    Ok(())
}

/// Draws `data` (rows of shape `row_shape`, see [`check_png_rows`]) as an image grid or a
/// scatter plot and writes it to `path` as a PNG.
pub fn samples_png(
    staged: &mut Staged,
    path: &Path,
    data: &[f32],
    row_shape: &[usize],
) -> Result<Drawn> {
    check_png_rows(row_shape)?;
    let len: usize = row_shape.iter().product();
    let rows = data.len() / len.max(1);
    if let &[c, h, w] = row_shape {
        let (width, height, rgb) = image_grid(data, rows, c, h, w);
        stage_png(staged, path, width, height, &rgb)?;
        return Ok(Drawn::Grid {
            n: rows,
            c,
            h,
            w,
            width,
            height,
        });
    }
    let (width, height, rgb, points) = scatter_png(data, len);
    stage_png(staged, path, width, height, &rgb)?;
    Ok(Drawn::Scatter { points, rows })
}

/// Encodes a `width` × `height` 8-bit RGB image (`rgb`: row-major, 3 bytes a pixel) as a
/// PNG into `staged` (renamed into place by its commit). Errors name the path.
pub fn stage_png(
    staged: &mut Staged,
    path: &Path,
    width: usize,
    height: usize,
    rgb: &[u8],
) -> Result<()> {
    let what = || format!("writing PNG {}", path.display());
    let (w, h) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(anyhow!("{width} x {height} px cannot be stored")).with_context(what),
    };
    if width.checked_mul(height).and_then(|p| p.checked_mul(3)) != Some(rgb.len()) {
        return Err(anyhow!(
            "{} bytes of RGB for {width} x {height} px",
            rgb.len()
        ))
        .with_context(what);
    }
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().with_context(what)?;
    writer.write_image_data(rgb).with_context(what)?;
    writer.finish().with_context(what)?;
    staged.put(path, &bytes)
}

/// A `width` x `height` RGB image filled with `color`.
fn canvas(color: [u8; 3], width: usize, height: usize) -> Vec<u8> {
    color
        .iter()
        .copied()
        .cycle()
        .take(width * height * 3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_corners_and_ranges() {
        let s = ascii_scatter(&[0.0, 0.0, 1.0, 1.0], 2, 4, 3);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[1], "|   @|");
        assert_eq!(lines[3], "|@   |");
        assert!(lines[5].contains("x: [0.00, 1.00]"));
        assert_eq!(ascii_scatter(&[1.0], 1, 4, 3), "");
    }

    /// The RGB pixel at (x, y) of a `width`-px-wide buffer.
    fn px(rgb: &[u8], width: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * width + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    #[test]
    fn value_mapping_clamps_and_rejects_non_finite() {
        assert_eq!(to_u8(-1.0), Some(0));
        assert_eq!(to_u8(1.0), Some(255));
        assert_eq!(to_u8(0.0), Some(128));
        assert_eq!(to_u8(-7.5), Some(0));
        assert_eq!(to_u8(3.0), Some(255));
        assert_eq!(to_u8(f32::NAN), None);
        assert_eq!(to_u8(f32::INFINITY), None);
    }

    #[test]
    fn grid_dimensions() {
        // 5 samples -> 3 columns, 2 rows; 8x8 -> scale 8 (64-px cells); 2-px gaps.
        let data = vec![0.0; 5 * 8 * 8];
        let (w, h, rgb) = image_grid(&data, 5, 1, 8, 8);
        assert_eq!((w, h), (3 * 64 + 2 * 2, 2 * 64 + 2));
        assert_eq!(rgb.len(), w * h * 3);
        // 28x28 -> scale 3 (84 px); 1 sample -> 1 column; 32x16 -> scale 2.
        assert_eq!(image_grid(&vec![0.0; 784], 1, 1, 28, 28).0, 84);
        let (w, h, _) = image_grid(&vec![0.0; 4 * 3 * 32 * 16], 4, 3, 32, 16);
        assert_eq!((w, h), (2 * 32 + 2, 2 * 64 + 2));
        // 100x100 is not upscaled; 16 samples -> 4 x 4.
        let (w, h, _) = image_grid(&vec![0.0; 16 * 100 * 100], 16, 1, 100, 100);
        assert_eq!((w, h), (4 * 100 + 3 * 2, 4 * 100 + 3 * 2));
        assert_eq!(image_grid(&[], 0, 1, 8, 8), (0, 0, Vec::new()));
    }

    #[test]
    fn grid_pixels_gray_rgb_nan_and_gaps() {
        // Two 1x2 gray samples: scale 32, cells 32 x 64 (h x w).
        let data = [-1.0, 1.0, 5.0, f32::NAN];
        let (w, h, rgb) = image_grid(&data, 2, 1, 1, 2);
        assert_eq!((w, h), (2 * 64 + 2, 32));
        assert_eq!(px(&rgb, w, 0, 0), [0, 0, 0]);
        assert_eq!(px(&rgb, w, 31, 31), [0, 0, 0]);
        assert_eq!(px(&rgb, w, 32, 0), [255, 255, 255]);
        assert_eq!(px(&rgb, w, 64, 5), GAP_RGB);
        assert_eq!(px(&rgb, w, 66, 0), [255, 255, 255]); // 5.0 clamped
        assert_eq!(px(&rgb, w, 66 + 32, 10), [255, 0, 0]); // NaN -> red
                                                           // One 3x1x1 RGB sample; a NaN in any channel -> red.
        let (w, _, rgb) = image_grid(&[1.0, -1.0, 0.0], 1, 3, 1, 1);
        assert_eq!(px(&rgb, w, 0, 0), [255, 0, 128]);
        let (w, _, rgb) = image_grid(&[1.0, 1.0, f32::INFINITY], 1, 3, 1, 1);
        assert_eq!(px(&rgb, w, 63, 63), [255, 0, 0]);
        // Two channels: channel 0 as grayscale.
        let (w, _, rgb) = image_grid(&[1.0, -1.0], 1, 2, 1, 1);
        assert_eq!(px(&rgb, w, 0, 0), [255, 255, 255]);
        // 3 samples in a 2 x 2 grid: the 4th cell is gap-coloured.
        let (w, h, rgb) = image_grid(&[-1.0; 3], 3, 1, 1, 1);
        assert_eq!((w, h), (130, 130));
        assert_eq!(px(&rgb, w, 0, 66), [0, 0, 0]);
        assert_eq!(px(&rgb, w, 100, 100), GAP_RGB);
    }

    #[test]
    fn scatter_picks_up_points_and_skips_non_finite() {
        // (-1, -1) lower left, (1, 1) upper right, a NaN row skipped; 3-wide rows.
        let data = [-1.0, -1.0, 9.0, 1.0, 1.0, 9.0, f32::NAN, 0.0, 9.0];
        let (w, h, rgb, n) = scatter_png(&data, 3);
        assert_eq!((w, h, n), (512, 512, 2));
        let dark = |p: [u8; 3]| p == SCATTER_DOT;
        // Range [-1.1, 1.1]: -1 -> pixel round(0.1 / 2.2 * 511) = 23.
        assert!(dark(px(&rgb, w, 23, 511 - 23)));
        assert!(dark(px(&rgb, w, 511 - 23, 23)));
        assert!(dark(px(&rgb, w, 22, 511 - 22)));
        assert_eq!(px(&rgb, w, 5, 5), SCATTER_BG);
        // Axis lines at 0: pixel 255 or 256 (1.1 / 2.2 * 511 = 255.5).
        assert!((255..=256).any(|c| px(&rgb, w, c, 5) == SCATTER_AXIS));
        assert!((255..=256).any(|r| px(&rgb, w, 5, r) == SCATTER_AXIS));
        let count = rgb
            .chunks_exact(3)
            .filter(|p| dark([p[0], p[1], p[2]]))
            .count();
        assert_eq!(count, 2 * 9);
        // All points positive: no axis lines.
        let (_, _, rgb, n) = scatter_png(&[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(n, 2);
        assert!(!rgb.chunks_exact(3).any(|p| p == SCATTER_AXIS));
        // A single point: drawn in the middle.
        let (w, _, rgb, n) = scatter_png(&[5.0, 5.0], 2);
        assert_eq!(n, 1);
        assert!(dark(px(&rgb, w, 256, 256)));
    }

    #[test]
    fn trajectory_paths_markers_and_shading() {
        // Two samples, three states [3, 2, 2]: sample 0 (0,0) -> (1,0) -> (1,1), sample 1
        // (2,2) -> (2,1) -> (2,0). Range x, y: [0, 2] -> [-0.1, 2.1]; 0 -> px 23, 1 -> 256,
        // 2 -> 488 (x / 2.2 * 511, rounded).
        let states = [0.0, 0.0, 2.0, 2.0, 1.0, 0.0, 2.0, 1.0, 1.0, 1.0, 2.0, 0.0];
        let (w, h, rgb, n) = trajectory_png(&states, 3, 2);
        assert_eq!((w, h, n), (512, 512, 2));
        let p = |c: usize, r: usize| px(&rgb, w, c, r);
        // Starts (blue) and ends (red), 5 x 5 px; rows count down from y = 2.1.
        assert_eq!(p(23, 488), PATH_START);
        assert_eq!(p(25, 490), PATH_START);
        assert_eq!(p(488, 23), PATH_START);
        assert_eq!(p(256, 256), PATH_END);
        assert_eq!(p(488, 488), PATH_END);
        assert_eq!(p(490, 486), PATH_END);
        // First segment of sample 0 (light blue) along y = 0; last segment (light orange)
        // along x = 1; the middle of sample 1's first segment.
        assert_eq!(p(140, 488), PATH_FIRST);
        assert_eq!(p(256, 370), PATH_LAST);
        assert_eq!(p(488, 140), PATH_FIRST);
        assert_eq!(p(5, 5), SCATTER_BG);
        // An axis line at x = 0 (in range): column 23.
        assert_eq!(p(23, 5), SCATTER_AXIS);
        // A non-finite path is left out; more than 64 samples draw 64.
        let (_, _, _, n) = trajectory_png(&[0.0, f32::NAN, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0], 2, 2);
        assert_eq!(n, 1);
        let many: Vec<f32> = (0..2 * 100 * 2).map(|i| i as f32).collect();
        assert_eq!(trajectory_png(&many, 2, 100).3, 64);
        assert!(check_trajectory_png(2).is_ok());
        let e = check_trajectory_png(784).unwrap_err().to_string();
        assert!(e.contains("2-D") && e.contains("784"), "{e}");
    }

    #[test]
    fn png_round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("flowrt-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.png");
        let png = |p: &Path, data: &[f32], rows: &[usize]| -> Result<Drawn> {
            let mut s = Staged::default();
            let d = samples_png(&mut s, p, data, rows)?;
            s.commit()?;
            Ok(d)
        };
        let d = png(&p, &[0.0, 0.5, -0.5, 1.0], &[2]).unwrap();
        assert_eq!(d, Drawn::Scatter { points: 2, rows: 2 });
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let info = dec.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (512, 512));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let d = png(&p, &[0.0; 2 * 3 * 4 * 4], &[3, 4, 4]).unwrap();
        assert!(
            matches!(
                d,
                Drawn::Grid {
                    n: 2,
                    width: 130,
                    height: 64,
                    ..
                }
            ),
            "{d:?}"
        );
        let bad = dir.join("no-such-dir").join("x.png");
        let e = format!("{:#}", png(&bad, &[0.0, 0.0], &[2]).unwrap_err());
        assert!(e.contains("no-such-dir"), "{e}");
        assert!(check_png_rows(&[1]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
