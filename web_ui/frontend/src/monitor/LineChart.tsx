// A small SVG line chart of one series over time: enough for a node's CPU and
// memory, with no charting library to load for two lines.

import { memo } from "react";

export interface Point {
  t: number; // ms since the epoch
  v: number;
}

interface Props {
  title: string;
  points: readonly Point[];
  format: (value: number) => string;
  /** The top of the scale; defaults to the largest value. */
  max?: number;
  width?: number;
  height?: number;
}

const PAD = 4;

function LineChartView({ title, points, format, max, width = 300, height = 70 }: Props) {
  if (!points.length) {
    return (
      <figure className="fk-chart">
        <figcaption>{title}</figcaption>
        <p className="fk-muted">No samples.</p>
      </figure>
    );
  }
  const first = points[0].t;
  const span = Math.max(1, points[points.length - 1].t - first);
  const top = Math.max(max ?? 0, ...points.map((point) => point.v), 1e-9);
  const x = (t: number) => PAD + ((t - first) / span) * (width - 2 * PAD);
  const y = (v: number) => height - PAD - (v / top) * (height - 2 * PAD);
  const path = points.map((point) => `${x(point.t).toFixed(1)},${y(point.v).toFixed(1)}`).join(" ");
  const latest = points[points.length - 1].v;
  const peak = Math.max(...points.map((point) => point.v));
  return (
    <figure className="fk-chart">
      <figcaption>
        {title}: <strong>{format(latest)}</strong> <span className="fk-muted">(peak {format(peak)})</span>
      </figcaption>
      <svg
        width={width}
        height={height}
        viewBox={`0 0 ${width} ${height}`}
        role="img"
        aria-label={`${title} over ${Math.round(span / 1000)} s: last ${format(latest)}, peak ${format(peak)}, ${points.length} samples`}
      >
        <rect x={0} y={0} width={width} height={height} className="fk-chart-frame" />
        {points.length === 1 ? (
          <circle cx={x(points[0].t)} cy={y(points[0].v)} r={2.5} className="fk-chart-dot" />
        ) : (
          <polyline points={path} className="fk-chart-line" />
        )}
      </svg>
    </figure>
  );
}

export const LineChart = memo(LineChartView);

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatPercent(value: number): string {
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} %`;
}
