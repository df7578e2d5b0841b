//! A grouped bar chart as a self-contained SVG file (no fonts, no
//! dependencies: text is left to the viewer).

use std::fmt::Write as _;

/// Bars of several series over shared categories.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chart {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (series name, one value per category; `NaN` leaves a gap).
    pub series: Vec<(String, Vec<f64>)>,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];
const W: f64 = 960.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round axis maximum and step for values up to `max`.
fn scale(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    pub fn render(&self) -> String {
        let max = self
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let (top, step) = scale(max);
        let plot_w = W - LEFT - RIGHT;
        let plot_h = H - TOP - BOTTOM;
        let y = |v: f64| TOP + plot_h * (1.0 - v / top);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="16">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        let mut v = 0.0;
        while v <= top + step / 2.0 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                label(v)
            );
            v += step;
        }
        let _ = writeln!(
            s,
            r#"<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            esc(&self.y_label)
        );
        let groups = self.categories.len().max(1) as f64;
        let group_w = plot_w / groups;
        let bars = self.series.len().max(1) as f64;
        let bar_w = group_w * 0.8 / bars;
        for (ci, cat) in self.categories.iter().enumerate() {
            let gx = LEFT + group_w * ci as f64;
            for (si, (_, values)) in self.series.iter().enumerate() {
                let Some(&val) = values.get(ci).filter(|v| v.is_finite()) else {
                    continue;
                };
                let x = gx + group_w * 0.1 + bar_w * si as f64;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                    y(val),
                    bar_w * 0.92,
                    (y(0.0) - y(val)).max(0.0),
                    COLORS[si % COLORS.len()],
                    esc(&self.series[si].0),
                    label(val)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_w / 2.0,
                TOP + plot_h + 18.0,
                esc(cat)
            );
        }
        for (si, (name, _)) in self.series.iter().enumerate() {
            let x = LEFT + 150.0 * si as f64;
            let yy = H - 30.0;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{yy}">{}</text>"#,
                yy - 10.0,
                COLORS[si % COLORS.len()],
                x + 16.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round_and_cover_the_maximum() {
        assert_eq!(scale(47_000.0), (50_000.0, 10_000.0));
        assert_eq!(scale(0.9), (1.0, 0.2));
        assert_eq!(scale(0.0), (1.0, 0.25));
    }

    #[test]
    fn one_bar_per_finite_value_and_escaped_text() {
        let c = Chart {
            title: "a < b".into(),
            y_label: "req/s".into(),
            categories: vec!["64".into(), "256".into()],
            series: vec![
                ("direct".into(), vec![10.0, 20.0]),
                ("wrenn".into(), vec![5.0, f64::NAN]),
            ],
        };
        let svg = c.render();
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("a &lt; b"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
