// WCAG 2 contrast of each visible text and form control against the first opaque background behind it.
// Run by Selenium's execute_script: the body of a function that returns [{what, ratio, need}].
const parse = (s) => {
  const p = s.match(/[\d.]+/g).map(Number);
  return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
};
const lum = (rgb) => {
  const [r, g, b] = rgb.map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const background = (node) => {
  for (let n = node; n; n = n.parentElement) {
    const c = parse(getComputedStyle(n).backgroundColor);
    if (c.a > 0) return c.rgb;
  }
  return [255, 255, 255];
};
const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== "hidden";
const out = [];
const check = (e, what) => {
  // Disabled controls are exempt in WCAG; screen-reader-only text is not drawn.
  if (!visible(e) || e.closest("[disabled], .sr-only, video")) return;
  const st = getComputedStyle(e);
  const l1 = lum(parse(st.color).rgb);
  const l2 = lum(background(e));
  const size = parseFloat(st.fontSize);
  const bold = parseInt(st.fontWeight, 10) >= 700;
  out.push({
    what: what.slice(0, 40),
    ratio: (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05),
    need: size >= 24 || (bold && size >= 18.66) ? 3 : 4.5,
  });
};
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
  const t = walker.currentNode;
  if (t.textContent.trim()) check(t.parentElement, t.textContent.trim());
}
for (const e of document.querySelectorAll("input, select, textarea")) check(e, `#${e.id}`);
return out;
