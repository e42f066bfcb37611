// Opens the dashboard in headless Chromium (Debian's, driven by playwright-core) and reports what
// a person would see, as JSON on stdout: whether it rendered live data, how many pixels each
// chart drew, whether any injected markup ran, the latest-steps texts, the "why isn't it
// learning?" lines, and a screenshot.
//   node test/check.mjs URL KEY SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, key, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { dialogs: [], errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
  page.on("dialog", async (d) => { result.dialogs.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => result.errors.push(String(e)));
  await page.goto(`${url}/dashboard#key=${encodeURIComponent(key)}`);
  // Two polls: the page keeps updating, not just drawing once.
  await page.waitForFunction(() => Number(document.body.dataset.rendered || 0) >= 2, null, { timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll("#diagnosis li").length > 0, null, { timeout: 20000 });
  Object.assign(result, await page.evaluate(() => {
    // Pixels of a chart's canvas in its first series' colour (#2f6fde): data drawn, not just
    // axes and grid.
    const inked = (id) => {
      const canvas = document.querySelector(`#${id} canvas`);
      if (!canvas) return 0;
      const px = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 0; i < px.length; i += 4) {
        const d = Math.abs(px[i] - 0x2f) + Math.abs(px[i + 1] - 0x6f) + Math.abs(px[i + 2] - 0xde);
        if (px[i + 3] > 128 && d < 60) n++;
      }
      return n;
    };
    const rows = [...document.querySelectorAll("#recent tbody tr")];
    return {
      rendered: Number(document.body.dataset.rendered),
      who: document.getElementById("who").textContent,
      ink: Object.fromEntries(["steps", "rewards", "feedback", "versions", "training"].map((id) => [id, inked(id)])),
      legends: [...document.querySelectorAll("#steps .u-legend .u-label")].map((e) => e.textContent),
      prompts: rows.map((r) => r.children[3].textContent),
      injectedElements: document.querySelectorAll("#recent img, #recent script, #recent b, #diagnosis img, #diagnosis script, #diagnosis b").length,
      diagnosis: [...document.querySelectorAll("#diagnosis li")].map((e) => e.textContent),
      xss: window.__xss === undefined ? null : window.__xss,
      timeline: document.querySelectorAll("#timeline tbody tr").length,
    };
  }));
  await page.screenshot({ path: shot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
