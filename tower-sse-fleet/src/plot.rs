//! The `plot` subcommand: reconnects per second over time (100 ms buckets) as a PNG, one line
//! per series, with the plotters bitmap backend.
//!
//! Text is drawn with ab_glyph from a TrueType file read at run time (`--font`, DejaVu Sans by
//! default, no fontconfig needed); without a readable font the plot is drawn without text.

use std::path::PathBuf;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::series::Table;

/// One line of a plot: `LABEL=FILE:COLUMN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSpec {
    /// The legend's label.
    pub label: String,
    /// The CSV file.
    pub file: PathBuf,
    /// The column in it.
    pub column: String,
}

/// Parses `LABEL=FILE:COLUMN`.
///
/// # Errors
///
/// When a part is missing.
pub fn parse_series(text: &str) -> Result<SeriesSpec, String> {
    let (label, rest) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected LABEL=FILE:COLUMN"))?;
    let (file, column) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}`: expected LABEL=FILE:COLUMN"))?;
    if label.is_empty() || file.is_empty() || column.is_empty() {
        return Err(format!("`{text}`: expected LABEL=FILE:COLUMN"));
    }
    Ok(SeriesSpec {
        label: label.to_owned(),
        file: PathBuf::from(file),
        column: column.to_owned(),
    })
}

/// The options of `plot`, parsed once from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// A line: LABEL=FILE:COLUMN (repeatable).
    #[arg(long = "series", value_parser = parse_series, required = true)]
    pub series: Vec<SeriesSpec>,
    /// The PNG to write.
    #[arg(long)]
    pub output: PathBuf,
    /// The title.
    #[arg(long, default_value = "reconnects per second (100 ms buckets)")]
    pub title: String,
    /// A TrueType font for the text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    /// Plot only from this second on.
    #[arg(long, default_value_t = 0.0)]
    pub from: f64,
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

/// Draws the plot.
///
/// # Errors
///
/// When a file cannot be read, a column is missing or the PNG cannot be written.
pub fn plot(args: &PlotArgs) -> Result<(), String> {
    let mut lines = Vec::new();
    for spec in &args.series {
        let table = Table::read(&spec.file)?;
        let counts = table
            .column(&spec.column)
            .ok_or_else(|| format!("{}: no column `{}`", spec.file.display(), spec.column))?;
        let points: Vec<(f64, f64)> = counts
            .iter()
            .enumerate()
            .map(|(i, &n)| (index_seconds(i), f64::from(n) * 10.0))
            .filter(|(t, _)| *t >= args.from)
            .collect();
        lines.push((spec.label.clone(), points));
    }
    let text = std::fs::read(&args.font)
        .ok()
        .map(|bytes| &*Box::leak(bytes.into_boxed_slice()))
        .is_some_and(|bytes| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        });
    if let Some(parent) = args.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    draw(args, &lines, text).map_err(|e| format!("{}: {e}", args.output.display()))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "bucket indexes are far below 2^53"
)]
fn index_seconds(index: usize) -> f64 {
    index as f64 / 10.0
}

fn draw(
    args: &PlotArgs,
    lines: &[(String, Vec<(f64, f64)>)],
    text: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(&args.output, (1000, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(t, _)| *t))
        .fold(args.from + 1.0, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(10.0, f64::max)
        * 1.08;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(&args.title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder.build_cartesian_2d(args.from..x_max, 0.0..y_max)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("time (s)")
            .y_desc("reconnects / s")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 14));
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    for (index, (label, points)) in lines.iter().enumerate() {
        let colour = COLOURS.get(index % COLOURS.len()).copied().unwrap_or(BLACK);
        let series = chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))?;
        if text {
            series.label(label.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_specs_need_label_file_and_column() {
        assert_eq!(
            parse_series("with=docs/fleet/sim-a.csv:with"),
            Ok(SeriesSpec {
                label: "with".into(),
                file: "docs/fleet/sim-a.csv".into(),
                column: "with".into()
            })
        );
        assert!(parse_series("docs/a.csv:with").is_err());
        assert!(parse_series("x=docs/a.csv").is_err());
        assert!(parse_series("x=:c").is_err());
    }
}
