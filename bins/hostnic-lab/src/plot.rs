//! SVG plots of the lab's measurements (plotters' SVG backend): the latency
//! distributions `hostnic-lab bench` measured, as cumulative distributions on a
//! logarithmic time axis, one curve per series, so hostnic and the reference
//! `ptp` are compared over every sample, not two percentiles.

use plotters::prelude::*;

/// Colours of the series, in order (hostnic ADD, ptp ADD, hostnic DEL, ptp DEL).
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

/// The empirical cumulative distribution of `samples`: (value, fraction ≤ value).
pub fn ecdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, (i + 1) as f64 / n))
        .collect()
}

/// An SVG of the cumulative distributions of `series` (name, samples in ms).
pub fn latency_svg(title: &str, series: &[(&str, &[f64])]) -> anyhow::Result<String> {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if all.is_empty() {
        (0.1, 10.0)
    } else {
        ((lo / 1.5).max(0.01), hi * 1.5)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log scale; the launcher's nsenter included)")
            .y_desc("fraction of calls at most this long")
            .draw()?;
        for (i, (name, samples)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points = ecdf(samples);
            // Steps: each sample raises the curve.
            let mut steps = Vec::with_capacity(points.len() * 2);
            let mut before = 0.0;
            for (x, y) in points {
                steps.push((x, before));
                steps.push((x, y));
                before = y;
            }
            chart
                .draw_series(LineSeries::new(steps, colour.stroke_width(2)))?
                .label(format!("{name} (n={})", samples.len()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ecdf_rises_to_one_in_sample_order() {
        let e = ecdf(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!(e, vec![(1.0, 1.0 / 3.0), (2.0, 2.0 / 3.0), (3.0, 1.0)]);
        assert!(ecdf(&[]).is_empty());
    }

    #[test]
    fn the_svg_has_a_curve_and_a_label_per_series() {
        let a = [1.2, 1.5, 2.0, 8.0];
        let b = [3.0, 3.5, 4.0];
        let svg = latency_svg("CNI ADD", &[("hostnic ADD", &a), ("ptp ADD", &b)]).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("hostnic ADD (n=4)") && svg.contains("ptp ADD (n=3)"));
        // Each series' colour: its curve and its legend line.
        for colour in ["#1F77B4", "#FF7F0E"] {
            let lines = svg
                .lines()
                .filter(|l| l.contains("<polyline") && l.to_uppercase().contains(colour))
                .count();
            assert_eq!(lines, 2, "{colour}:\n{svg}");
        }
        assert!(svg.contains("latency, ms"), "axis description");
    }
}
