//! The sweep's curves as one SVG: send→deliver latency against the offered
//! rate (both axes logarithmic; p50, p99 and p999 with a legend), and below
//! it the achieved rates against the offered one.
//!
//! Only plotters' `svg_backend` is used: the SVG backend writes `<text>`
//! elements itself (the viewer picks the font), and with no font feature
//! plotters only estimates text extents for layout, so no font file and no
//! `ttf` feature are needed.

use plotters::prelude::*;

/// A named, coloured series and how to read its value off a point.
type Series = (&'static str, RGBColor, fn(&Point) -> f64);

/// One step of a sweep, as drawn.
pub struct Point {
    pub offered: f64,
    pub acked_per_sec: f64,
    pub delivered_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Whole decades around the positive values (at least one decade wide).
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() || hi <= 0.0 {
        return (0.1, 10.0);
    }
    // A little slack, so an exact power of ten is its own bound.
    let lo = 10f64.powi((lo.log10() + 1e-9).floor() as i32);
    let mut hi = 10f64.powi((hi.log10() - 1e-9).ceil() as i32);
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// A number with at most three decimals and no trailing zeros.
fn short(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn rate_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", short(v / 1000.0))
    } else {
        short(v)
    }
}

/// The SVG document for these steps.
pub fn svg(points: &[Point], title: &str) -> anyhow::Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (960, 1040)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(600);

        let (x0, x1) = decades(points.iter().map(|p| p.offered));

        // Latency, log–log.
        let (y0, y1) = decades(points.iter().flat_map(|p| [p.p50_ms, p.p99_ms, p.p999_ms]));
        let mut chart = ChartBuilder::on(&top)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("offered rate (msgs/s, log scale)")
            .y_desc("send→deliver latency (ms, log scale)")
            .x_label_formatter(&|v: &f64| rate_label(*v))
            .y_label_formatter(&|v: &f64| short(*v))
            .draw()?;
        let series: [Series; 3] = [
            ("p50", BLUE, |p: &Point| p.p50_ms),
            ("p99", RGBColor(230, 120, 0), |p: &Point| p.p99_ms),
            ("p999", RED, |p: &Point| p.p999_ms),
        ];
        for (name, color, value) in series {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.offered, value(p)))
                .filter(|&(x, y)| x > 0.0 && y > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;

        // Achieved against offered (linear rates, same log x axis).
        let top_rate = points
            .iter()
            .flat_map(|p| [p.offered, p.acked_per_sec, p.delivered_per_sec])
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut rates = ChartBuilder::on(&bottom)
            .caption("achieved against offered rate", ("sans-serif", 18))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..top_rate)?;
        rates
            .configure_mesh()
            .x_desc("offered rate (msgs/s, log scale)")
            .y_desc("msgs/s")
            .x_label_formatter(&|v: &f64| rate_label(*v))
            .y_label_formatter(&|v: &f64| rate_label(*v))
            .draw()?;
        let grey = RGBColor(150, 150, 150);
        let diagonal: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.offered, p.offered))
            .filter(|&(x, _)| x > 0.0)
            .collect();
        rates
            .draw_series(LineSeries::new(diagonal, grey))?
            .label("offered")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        let achieved: [Series; 2] = [
            ("acked/s", BLUE, |p: &Point| p.acked_per_sec),
            ("delivered/s", GREEN, |p: &Point| p.delivered_per_sec),
        ];
        for (name, color, value) in achieved {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.offered, value(p)))
                .filter(|&(x, _)| x > 0.0)
                .collect();
            rates
                .draw_series(LineSeries::new(pts.clone(), color))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            rates.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        rates
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;

        root.present()?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_points_and_a_legend() {
        let pts: Vec<Point> = [(1000.0, 1.5), (2000.0, 2.0), (4000.0, 40.0)]
            .iter()
            .map(|&(r, l)| Point {
                offered: r,
                acked_per_sec: r * 0.95,
                delivered_per_sec: r * 0.95,
                p50_ms: l,
                p99_ms: l * 2.0,
                p999_ms: l * 3.0,
            })
            .collect();
        let s = svg(&pts, "test").unwrap();
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.contains("<polyline") || s.contains("<path"), "{s}");
        assert!(s.contains("<circle"), "{s}");
        for label in ["p50", "p99", "p999", "delivered/s"] {
            assert!(s.contains(label), "{label} missing");
        }
        assert!(s.trim_end().ends_with("</svg>"), "{s}");
    }

    #[test]
    fn decades_cover_the_values() {
        let near = |(a, b): (f64, f64), (c, d): (f64, f64)| {
            (a - c).abs() <= c * 1e-9 && (b - d).abs() <= d * 1e-9
        };
        assert!(near(decades([0.3, 42.0].into_iter()), (0.1, 100.0)));
        assert!(near(decades([1000.0].into_iter()), (1000.0, 10000.0)));
        assert!(near(decades([200.0, 400.0].into_iter()), (100.0, 1000.0)));
        assert!(near(decades(std::iter::empty::<f64>()), (0.1, 10.0)));
        assert_eq!(short(2.5), "2.5");
        assert_eq!(rate_label(20000.0), "20k");
    }
}
