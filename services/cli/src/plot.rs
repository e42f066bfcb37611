//! The demo's figure: mean reward per window of requests (top) and the serving version over time
//! (bottom), as SVG (no fonts or system libraries needed).

use std::path::Path;

use plotters::prelude::*;

use crate::demo::Report;

pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(draw)?;
    let (top, bottom) = root.split_vertically(340);

    let n = report.windows.len().max(1) as f64;
    let rewards: Vec<f64> = report.windows.iter().map(|w| w.mean_reward).collect();
    let lo = rewards
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .min(0.5)
        - 0.02;
    let hi = rewards
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max)
        .max(0.5)
        + 0.02;
    let mut chart = ChartBuilder::on(&top)
        .caption("mean reward per window of requests", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n, lo..hi)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("window")
        .y_desc("reward")
        .draw()
        .map_err(draw)?;
    let points: Vec<(f64, f64)> = rewards
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64 + 0.5, *r))
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
        .map_err(draw)?;
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))
        .map_err(draw)?;

    let end = report.seconds.max(1.0);
    let top_version = report.timeline.iter().map(|(_, v)| *v).max().unwrap_or(0) as f64 + 1.0;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("serving version", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..end, 0f64..top_version)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("version")
        .draw()
        .map_err(draw)?;
    // A step line: each version holds until the next one is activated.
    let mut steps = vec![(0.0, 0.0)];
    for (t, v) in &report.timeline {
        let last = steps.last().map_or(0.0, |p: &(f64, f64)| p.1);
        steps.push((*t, last));
        steps.push((*t, *v as f64));
    }
    steps.push((end, steps.last().map_or(0.0, |p| p.1)));
    chart
        .draw_series(LineSeries::new(steps, RED.stroke_width(2)))
        .map_err(draw)?;
    root.present().map_err(draw)?;
    Ok(())
}

fn draw<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the figure: {e:?}")
}
