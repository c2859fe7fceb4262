//! `flowrt_tests::w2::w2`, the exact W2 distance of `docs/quantization.md`, against independent
//! references: scipy's `linear_sum_assignment` and POT's `ot.emd2` (network simplex) on the
//! committed point sets of `tests/fixtures/data/` (numbers written by
//! `tests/fixtures/make_w2_data.py`), and closed forms.

use flowrt_tests::w2::w2;
use flowrt_tests::{fixtures_dir, npy};

/// Agreement with scipy / POT (both float64 on the same float32 points).
const TOL: f64 = 1e-9;

fn data(name: &str) -> Vec<f32> {
    let (v, shape) = npy(&fixtures_dir().join("data").join(name));
    assert_eq!(shape.len(), 2, "{name}: [rows, 2]");
    assert_eq!(shape[1], 2, "{name}: 2-D points");
    v
}

fn manifest() -> serde_json::Value {
    let p = fixtures_dir().join("data/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("data manifest")).expect("json")
}

fn number(v: &serde_json::Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what}: not a number"))
}

#[test]
fn matches_scipy_and_pot_on_the_reference_sets() {
    let m = manifest();
    let (a, b) = (data("w2_a.npy"), data("w2_b.npy"));
    let got = w2(&a, &b, 2);
    let scipy = number(&m["w2_a_b"]["scipy_linear_sum_assignment"], "scipy");
    let pot = number(&m["w2_a_b"]["pot_emd2"], "pot");
    println!("W2(a, b) = {got:.15} (scipy {scipy:.15}, POT {pot:.15})");
    assert!((got - scipy).abs() <= TOL, "scipy: {got} vs {scipy}");
    assert!((got - pot).abs() <= TOL, "POT: {got} vs {pot}");
    // Symmetric.
    assert!((w2(&b, &a, 2) - got).abs() <= TOL);
}

#[test]
fn matches_scipy_on_the_data_noise_floors() {
    // 1024 against 1024 points, the size the quantization bin uses.
    let m = manifest();
    for (name, file) in [("moons", "moons_2048.npy"), ("checker", "checker_2048.npy")] {
        let d = data(file);
        let (first, second) = d.split_at(1024 * 2);
        let got = w2(first, second, 2);
        let want = number(&m["noise_floor_first_vs_second_1024"][name], name);
        println!("{name}: W2(first, second 1024) = {got:.15} (scipy {want:.15})");
        assert!((got - want).abs() <= TOL, "{name}: {got} vs {want}");
    }
}

#[test]
fn closed_forms() {
    let a = data("w2_a.npy");
    // A permutation of the same points: distance 0.
    let mut rows: Vec<&[f32]> = a.chunks_exact(2).collect();
    rows.reverse();
    rows.rotate_left(37);
    let permuted: Vec<f32> = rows.concat();
    assert_eq!(w2(&a, &permuted, 2), 0.0);
    // A translation by d: the identity coupling is optimal, W2 = |d| (exactly representable
    // shift, so the f32 points move by exactly d).
    let (dx, dy) = (0.75f32, -0.5f32);
    let moved: Vec<f32> = a
        .chunks_exact(2)
        .flat_map(|p| [p[0] + dx, p[1] + dy])
        .collect();
    let want = (moved
        .chunks_exact(2)
        .zip(a.chunks_exact(2))
        .map(|(p, q)| (f64::from(p[0] - q[0])).powi(2) + (f64::from(p[1] - q[1])).powi(2))
        .sum::<f64>()
        / (a.len() / 2) as f64)
        .sqrt();
    let got = w2(&a, &moved, 2);
    assert!((got - want).abs() <= TOL, "translation: {got} vs {want}");
    assert!((want - 0.901_387_818_865_997_4).abs() < 1e-4, "{want}");
    // Two points on a line, crossed: the optimal coupling uncrosses them.
    let x = [0.0f32, 0.0, 1.0, 0.0];
    let y = [1.5f32, 0.0, 0.25, 0.0];
    // sqrt(((0 - 0.25)^2 + (1 - 1.5)^2) / 2)
    assert!((w2(&x, &y, 2) - (0.3125f64 / 2.0).sqrt()).abs() <= 1e-15);
}
