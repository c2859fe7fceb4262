//! A terminal density plot of 2-D samples, for demos and quick looks (`flowrt sample --ascii`).

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
}
