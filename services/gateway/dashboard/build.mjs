// Builds dist/ (embedded into clawline-gateway by include_str!): the page, its CSS (uPlot's and
// ours) and one script (uPlot's IIFE build, then the app). Run `npm ci && npm run build` after
// changing src/ or the uPlot version; dist/ is committed so a Rust build needs no Node.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";

const read = (p) => readFileSync(new URL(p, import.meta.url), "utf8");
mkdirSync(new URL("dist/", import.meta.url), { recursive: true });
const write = (p, s) => writeFileSync(new URL("dist/" + p, import.meta.url), s);
const uplot = JSON.parse(read("node_modules/uplot/package.json")).version;
write("index.html", read("src/index.html"));
write("dashboard.css", `/* uPlot ${uplot} */\n` + read("node_modules/uplot/dist/uPlot.min.css") + "\n" + read("src/style.css"));
write("dashboard.js", `/* uPlot ${uplot} (MIT) */\n` + read("node_modules/uplot/dist/uPlot.iife.min.js") + "\n" + read("src/app.js"));
console.log(`dist/ built with uPlot ${uplot}`);
