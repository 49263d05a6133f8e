/**
 * The lifecycle statechart as a picture, offline: Mermaid text (for docs and
 * GitHub) and a self-contained SVG (for the status page and `certstate
 * diagram`). Both are drawn from the machine's real structure (`readChart`);
 * only the *positions* of the SVG's boxes are fixed here.
 */
import { pathToStateValue, type AnyStateMachine } from 'xstate';
import { lifecycleStateOf } from '../machines/certificate.js';
import type { LifecycleState } from '../types.js';
import { readChart, type Chart, type ChartState, type ChartTransition } from './chart.js';
import { escapeXml } from './escape.js';

// ─── Mermaid ───────────────────────────────────────────────────────────────

/**
 * The chart as a Mermaid `stateDiagram-v2`: compound states nest, transient
 * routing states become `<<choice>>` nodes, guards appear in brackets, and
 * root-level transitions (taken from any state) become a note on their target.
 *
 * @example toMermaid(certificateMachine)
 */
export function toMermaid(machine: AnyStateMachine): string {
  const chart = readChart(machine);
  const ids = mermaidIds(chart);
  const byParent = groupBy(chart.states, (s) => s.parent);
  const lines = ['stateDiagram-v2'];

  const declare = (parent: string, indent: string) => {
    const initial = parent === '' ? chart.initial : chart.states.find((s) => s.id === parent)?.initial;
    if (initial) lines.push(`${indent}[*] --> ${ids.get(initial)}`);
    for (const state of byParent.get(parent) ?? []) {
      const id = ids.get(state.id)!;
      if (state.children.length > 0) {
        lines.push(`${indent}state ${labelled(state.key, id)} {`);
        declare(state.id, `${indent}  `);
        lines.push(`${indent}}`);
      } else if (state.transient) {
        lines.push(`${indent}state ${id} <<choice>>`);
      } else {
        // Declared where it nests, so that transitions elsewhere refer to this state.
        lines.push(state.key === id ? `${indent}${id}` : `${indent}state "${state.key}" as ${id}`);
      }
      if (state.type === 'final') lines.push(`${indent}${id} --> [*]`);
    }
  };
  declare('', '  ');

  for (const t of chart.transitions) {
    if (t.source === '') continue;
    const label = mermaidLabel(t);
    lines.push(`  ${ids.get(t.source)} --> ${ids.get(t.target)}${label ? ` : ${label}` : ''}`);
  }
  for (const t of chart.transitions.filter((t) => t.source === '')) {
    lines.push(`  note right of ${ids.get(t.target)} : ${mermaidText(t.trigger)} from any state`);
  }
  return `${lines.join('\n')}\n`;
}

/** Mermaid ids: the state key when unique and plain, else the path with `_`. */
function mermaidIds(chart: Chart): Map<string, string> {
  const count = new Map<string, number>();
  for (const s of chart.states) count.set(s.key, (count.get(s.key) ?? 0) + 1);
  return new Map(chart.states.map((s) => [s.id, (count.get(s.key) === 1 ? s.key : s.id).replace(/[^A-Za-z0-9_]/g, '_')]));
}

function labelled(key: string, id: string): string {
  return key === id ? id : `"${key}" as ${id}`;
}

function mermaidLabel(t: ChartTransition): string {
  const parts = [t.trigger, t.guard ? `[${t.guard}]` : ''].filter(Boolean);
  return mermaidText(parts.join(' '));
}

/** Keep labels inside what Mermaid's state grammar accepts on one line. */
function mermaidText(text: string): string {
  return text.replace(/[^A-Za-z0-9_ .,()[\]!-]/g, ' ').replace(/\s+/g, ' ').trim();
}

// ─── SVG ───────────────────────────────────────────────────────────────────

/** Options of {@link toSvg}. */
export interface SvgOptions {
  /** Draw this state as the current one (also marks its enclosing compound state). */
  highlight?: LifecycleState | string;
  /** A title drawn at the top left (escaped). */
  title?: string;
  /** CSP nonce for the SVG's `<style>` element, when embedded in a page with a strict CSP. */
  styleNonce?: string;
}

interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

const WIDTH = 1120;
const HEIGHT = 800;
const STATE_W = 156;
const STATE_H = 46;
/**
 * Positions (box centres) of the states we know; any other state goes to a
 * spare row, so the picture never drops one. Inside `attempting`, obtaining
 * sits nearest failed-backoff and renewing nearest valid, the states their
 * most common edges come from; storage-unreadable sits beside loading, the
 * only state it leads to.
 */
const LAYOUT: Record<string, { x: number; y: number }> = {
  loading: { x: 480, y: 45 },
  'storage-unreadable': { x: 880, y: 45 },
  paused: { x: 1000, y: 510 },
  routing: { x: 480, y: 270 },
  valid: { x: 130, y: 270 },
  'failed-backoff.choosing': { x: 735, y: 270 },
  'failed-backoff.serving': { x: 1000, y: 155 },
  'failed-backoff.serving-expired': { x: 1000, y: 275 },
  'failed-backoff.refusing': { x: 1000, y: 395 },
  'attempting.choosing': { x: 480, y: 560 },
  'attempting.expired-renewing': { x: 225, y: 640 },
  'attempting.renewing': { x: 480, y: 640 },
  'attempting.obtaining': { x: 735, y: 640 },
  stopped: { x: 480, y: 750 },
};
/**
 * Per-edge drawing hints: `bend` (fraction of the edge's length the curve
 * bows out; the sign picks the side), `labelAt` (0..1 along the curve) and
 * `labelDx`/`labelDy` (label shift, px); `exit` (the border a compound
 * state's edge leaves from, when the nearest one would cross another state).
 */
const HINTS: Record<string, { bend?: number; labelAt?: number; labelDx?: number; labelDy?: number; exit?: 'top' | 'bottom' }> = {
  'attempting.renewing>attempting.expired-renewing': { labelDy: -14 },
  'failed-backoff>valid': { exit: 'top', bend: 0.12, labelAt: 0.22 },
  'loading>routing': { labelAt: 0.3 },
  'loading>storage-unreadable': { bend: 0.12 },
  'storage-unreadable>loading': { bend: 0.12 },
  'valid>attempting': { labelAt: 0.35 },
  'valid>routing': { bend: 0.12, labelAt: 0.45 },
  'routing>valid': { bend: 0.12 },
  'routing>attempting': { labelAt: 0.6 },
  'routing>failed-backoff': { labelAt: 0.45 },
  'attempting>valid': { labelAt: 0.45 },
  'attempting>failed-backoff': { labelAt: 0.6 },
  'failed-backoff>attempting': { labelAt: 0.35 },
  'failed-backoff>routing': { bend: 0.15, labelAt: 0.55 },
  'failed-backoff.serving>failed-backoff.refusing': { bend: -0.22, labelAt: 0.72, labelDx: 4 },
  'failed-backoff.serving>failed-backoff.serving-expired': { bend: 0, labelAt: 0.4 },
  'failed-backoff.choosing>failed-backoff.serving': { labelAt: 0.45 },
  'failed-backoff.choosing>failed-backoff.serving-expired': { bend: 0, labelAt: 0.36, labelDy: -12 },
  'failed-backoff.choosing>failed-backoff.refusing': { labelAt: 0.45 },
};
const DEFAULT_BEND = 0.07;

/**
 * A self-contained SVG of the chart (no scripts, fonts or external
 * references): each state is a `<g class="state" data-state="…">`, the
 * highlighted one has class `current` and `aria-current="true"`.
 *
 * @example toSvg(certificateMachine, { highlight: 'failed-backoff' })
 */
export function toSvg(machine: AnyStateMachine, options: SvgOptions = {}): string {
  const chart = readChart(machine);
  const boxes = layout(chart);
  const highlight = resolveHighlight(chart, options.highlight);
  const out: string[] = [];
  const nonce = options.styleNonce ? ` nonce="${escapeXml(options.styleNonce)}"` : '';
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${escapeXml(`${chart.id} statechart`)}" class="certstate-chart">`,
    `<style${nonce}>${SVG_STYLE}</style>`,
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>',
  );
  if (options.title) out.push(`<text x="12" y="22" class="title">${escapeXml(options.title)}</text>`);

  // Compound states first, so their children are drawn on top.
  for (const state of chart.states.filter((s) => s.children.length > 0)) {
    const b = boxes.get(state.id)!;
    // The highlighted state itself is `current` (a state with substates, like failed-backoff, too); its ancestors are `active`.
    const current = highlight.get(state.id) === 'current';
    const marks = `${highlight.has(state.id) ? ' active' : ''}${current ? ' current" aria-current="true' : ''}`;
    out.push(
      `<g class="compound${marks}" data-state="${escapeXml(state.key)}"><rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" rx="14"/>`,
      `<text x="${b.x + 12}" y="${b.y + 20}" class="compound-label">${escapeXml(state.key)}</text></g>`,
    );
  }

  const edges = aggregate(chart);
  for (const edge of edges) out.push(drawEdge(edge, boxes));

  for (const state of chart.states.filter((s) => s.children.length === 0)) {
    const b = boxes.get(state.id)!;
    const current = highlight.has(state.id);
    const attrs = `class="state${current ? ' current' : ''}${state.transient ? ' choice' : ''}" data-state="${escapeXml(state.key)}"${current ? ' aria-current="true"' : ''}`;
    if (state.transient) {
      const cx = b.x + b.w / 2;
      const cy = b.y + b.h / 2;
      out.push(`<g ${attrs}><path d="M${cx},${b.y} L${b.x + b.w},${cy} L${cx},${b.y + b.h} L${b.x},${cy} z"/><text x="${cx}" y="${b.y + b.h + 14}" class="small">${escapeXml(state.key)}</text></g>`);
      continue;
    }
    const selfLoops = chart.transitions.filter((t) => t.source === state.id && t.target === state.id).map((t) => t.trigger);
    const anyState = chart.transitions.filter((t) => t.source === '' && t.target === state.id).map((t) => `${t.trigger} from any state`);
    out.push(
      `<g ${attrs}><title>${escapeXml(state.key)}</title><rect x="${b.x}" y="${b.y}" width="${b.w}" height="${b.h}" rx="${state.type === 'final' ? 23 : 8}"/>`,
      `<text x="${b.x + b.w / 2}" y="${b.y + b.h / 2 + 5}" class="state-label">${escapeXml(state.key)}</text>`,
    );
    const notes = [...(selfLoops.length ? [`↻ ${[...new Set(selfLoops)].join(', ')}`] : []), ...anyState];
    notes.forEach((note, i) => out.push(`<text x="${b.x + b.w / 2}" y="${b.y + b.h + 14 + i * 13}" class="small">${escapeXml(note)}</text>`));
    out.push('</g>');
  }
  if (chart.initial) {
    const b = boxes.get(chart.initial)!;
    out.push(`<circle cx="${b.x - 40}" cy="${b.y + b.h / 2}" r="7" class="initial"/><line x1="${b.x - 33}" y1="${b.y + b.h / 2}" x2="${b.x - 2}" y2="${b.y + b.h / 2}" class="edge" marker-end="url(#arrow)"/>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

const SVG_STYLE = [
  '.certstate-chart{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#fff}',
  '.state rect,.state path{fill:#f4f6fa;stroke:#5b6b82;stroke-width:1.5}',
  '.state.choice path{fill:#fff}',
  '.state.current rect,.state.current path{fill:#ffe58f;stroke:#b7791f;stroke-width:3.5}',
  '.compound rect{fill:#fbfcfe;stroke:#9aa7b8;stroke-width:1.2;stroke-dasharray:6 4}',
  '.compound.active rect{stroke:#b7791f;stroke-width:2}',
  '.compound.current rect{fill:#fff8e1;stroke-width:3.5}',
  '.state-label{font-size:14px;font-weight:600;text-anchor:middle;fill:#1f2937}',
  '.compound-label{font-size:13px;font-style:italic;fill:#52606d}',
  '.small{font-size:10.5px;text-anchor:middle;fill:#52606d}',
  '.title{font-size:14px;font-weight:600;fill:#1f2937}',
  '.edge{fill:none;stroke:#7b8794;stroke-width:1.3}',
  '.arrowhead{fill:#7b8794}',
  '.edge-label{font-size:10.5px;text-anchor:middle;fill:#334155}',
  '.edge-label-bg{fill:#fff;opacity:.85}',
  '.initial{fill:#1f2937}',
].join('');

/** The highlighted state (`current`) and the compound states around it (`active`). */
function resolveHighlight(chart: Chart, highlight: string | undefined): Map<string, 'current' | 'active'> {
  const out = new Map<string, 'current' | 'active'>();
  if (!highlight) return out;
  let state = chart.states.find((s) => s.key === highlight || s.id === highlight);
  while (state) {
    out.set(state.id, out.size === 0 ? 'current' : 'active');
    state = chart.states.find((s) => s.id === state!.parent);
  }
  return out;
}

/** Fixed positions for known states, a spare row for others, compound boxes around their children. */
function layout(chart: Chart): Map<string, Box> {
  const boxes = new Map<string, Box>();
  let spare = 0;
  const leaves = chart.states.filter((s) => s.children.length === 0);
  for (const state of leaves) {
    const at = LAYOUT[state.id] ?? { x: 90 + (spare++ % 5) * 190, y: HEIGHT - 40 };
    // Wide enough for the state's name (14 px bold, ~8.6 px a character).
    const size = state.transient ? { w: 44, h: 44 } : { w: Math.max(STATE_W, Math.round(state.key.length * 8.6 + 18)), h: STATE_H };
    boxes.set(state.id, { x: at.x - size.w / 2, y: at.y - size.h / 2, ...size });
  }
  // Deepest compound states first, so an outer one encloses an inner one's box.
  const compounds = chart.states.filter((s) => s.children.length > 0).sort((a, b) => b.id.split('.').length - a.id.split('.').length);
  for (const state of compounds) {
    const inner = state.children.map((c) => boxes.get(c)!).filter(Boolean);
    const x = Math.min(...inner.map((b) => b.x)) - 24;
    const y = Math.min(...inner.map((b) => b.y)) - 42;
    const right = Math.max(...inner.map((b) => b.x + b.w)) + 24;
    const bottom = Math.max(...inner.map((b) => b.y + b.h)) + 30;
    boxes.set(state.id, { x, y, w: right - x, h: bottom - y });
  }
  return boxes;
}

interface Edge {
  source: string;
  target: string;
  labels: string[];
}

/** One drawn edge per (source, target) pair, its labels merged. Self-loops and root transitions are notes on the box instead. */
function aggregate(chart: Chart): Edge[] {
  const edges = new Map<string, Edge>();
  for (const t of chart.transitions) {
    if (t.source === '' || t.source === t.target) continue;
    const key = `${t.source}>${t.target}`;
    const edge = edges.get(key) ?? { source: t.source, target: t.target, labels: [] };
    const label = t.guard ? `${t.trigger ? `${t.trigger} ` : ''}[${t.guard}]` : t.trigger;
    if (label && !edge.labels.includes(label)) edge.labels.push(label);
    edges.set(key, edge);
  }
  return [...edges.values()];
}

function drawEdge(edge: Edge, boxes: Map<string, Box>): string {
  const from = boxes.get(edge.source)!;
  const to = boxes.get(edge.target)!;
  const hint = HINTS[`${edge.source}>${edge.target}`] ?? {};
  const bend = hint.bend ?? DEFAULT_BEND;
  const compound = from.w > STATE_W * 2;
  // A compound state's edges leave its border straight towards the target; others bow a little, so opposite edges do not overlap.
  const p1 = compound ? compoundExit(from, to, hint.exit) : exitPoint(from, centre(to));
  const c2 = centre(to);
  const dx = c2.x - p1.x;
  const dy = c2.y - p1.y;
  const ctrl = compound && hint.bend === undefined
    ? { x: (p1.x + c2.x) / 2, y: (p1.y + c2.y) / 2 }
    : { x: (p1.x + c2.x) / 2 - dy * bend, y: (p1.y + c2.y) / 2 + dx * bend };
  const q1 = compound ? p1 : exitPoint(from, ctrl);
  const p2 = exitPoint(to, ctrl);
  const t = hint.labelAt ?? 0.5;
  const at = (a: number, b: number, c: number) => (1 - t) ** 2 * a + 2 * t * (1 - t) * b + t ** 2 * c;
  const mid = { x: at(q1.x, ctrl.x, p2.x), y: at(q1.y, ctrl.y, p2.y) };
  const parts = [`<g class="transition" data-source="${escapeXml(edge.source)}" data-target="${escapeXml(edge.target)}">`];
  parts.push(`<path class="edge" d="M${r(q1.x)},${r(q1.y)} Q${r(ctrl.x)},${r(ctrl.y)} ${r(p2.x)},${r(p2.y)}" marker-end="url(#arrow)"/>`);
  edge.labels.forEach((label, i) => {
    const y = mid.y + 4 + (hint.labelDy ?? 0) + (i - (edge.labels.length - 1) / 2) * 12.5;
    const w = label.length * 5.6 + 6;
    const x = mid.x + (hint.labelDx ?? 0);
    parts.push(`<rect class="edge-label-bg" x="${r(x - w / 2)}" y="${r(y - 9)}" width="${r(w)}" height="12"/>`);
    parts.push(`<text class="edge-label" x="${r(x)}" y="${r(y)}">${escapeXml(label)}</text>`);
  });
  parts.push('</g>');
  return parts.join('');
}

function centre(b: Box) {
  return { x: b.x + b.w / 2, y: b.y + b.h / 2 };
}

/** Where the line from the centre of `box` towards `toward` crosses the box's border. */
function exitPoint(box: Box, toward: { x: number; y: number }): { x: number; y: number } {
  const c = centre(box);
  const dx = toward.x - c.x;
  const dy = toward.y - c.y;
  if (dx === 0 && dy === 0) return c;
  const s = Math.min(dx === 0 ? Infinity : box.w / 2 / Math.abs(dx), dy === 0 ? Infinity : box.h / 2 / Math.abs(dy));
  return { x: c.x + dx * s, y: c.y + dy * s };
}

/**
 * A wide compound box is left from the border facing the target: its left or
 * right side level with a target beside it, else its top or bottom under or
 * over the target.
 */
function compoundExit(box: Box, target: Box, side?: 'top' | 'bottom'): { x: number; y: number } {
  const c = centre(target);
  const level = c.y > box.y && c.y < box.y + box.h;
  if (side === undefined && level && (c.x < box.x || c.x > box.x + box.w)) return { x: c.x < box.x ? box.x : box.x + box.w, y: c.y };
  const x = Math.min(Math.max(c.x, box.x + 20), box.x + box.w - 20);
  const top = side === 'top' || (side === undefined && c.y < box.y);
  return { x, y: top ? box.y : box.y + box.h };
}

function r(n: number): string {
  return (Math.round(n * 10) / 10).toString();
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const item of items) out.set(key(item), [...(out.get(key(item)) ?? []), item]);
  return out;
}

/**
 * The user-visible lifecycle states of a chart: its resting leaves (not the
 * transient routing states), each named as `lifecycleStateOf` names it, once.
 */
export function lifecycleStates(machine: AnyStateMachine): string[] {
  const leaves = readChart(machine).states.filter((s: ChartState) => s.children.length === 0 && !s.transient);
  return [...new Set(leaves.map((s) => lifecycleStateOf(pathToStateValue(s.id.split('.')))))];
}
