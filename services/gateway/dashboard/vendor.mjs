// Copies uPlot's browser build into vendor/uplot/ (embedded into clawline-gateway by
// include_str!, with src/ as it is). Run `npm ci && npm run vendor` after changing the uPlot
// version; vendor/ is committed so a Rust build needs no Node. Editing src/ needs no step.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

const at = (p) => new URL(p, import.meta.url);
const uplot = JSON.parse(readFileSync(at("node_modules/uplot/package.json"), "utf8")).version;
mkdirSync(at("vendor/uplot/"), { recursive: true });
for (const f of ["dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE"]) {
  copyFileSync(at(`node_modules/uplot/${f}`), at(`vendor/uplot/${f.split("/").pop()}`));
}
writeFileSync(at("vendor/uplot/VERSION"), uplot + "\n");
console.log(`vendor/uplot/ holds uPlot ${uplot}`);
