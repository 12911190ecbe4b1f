// Renders equations with KaTeX for ci/site_build.py, once, when the site is built: the pages then carry HTML and MathML
// and need no script to show mathematics. One JSON request per line on stdin: {"tex": "...", "display": true};
// one JSON answer per line on stdout: {"html": "...", "error": null} or, for an equation KaTeX cannot parse,
// {"html": <KaTeX's error element>, "error": "<message>"}.
const katex = require("katex");
const readline = require("readline");

const options = (display, throwOnError) => ({
  displayMode: display, throwOnError, output: "htmlAndMathml", strict: "ignore", trust: false,
});

function render(tex, display) {
  try {
    return { html: katex.renderToString(tex, options(display, true)), error: null };
  } catch (e) {
    // Render it again without throwing: KaTeX then returns its own error element (class katex-error).
    return { html: katex.renderToString(tex, options(display, false)), error: String(e.message || e) };
  }
}

const lines = readline.createInterface({ input: process.stdin, terminal: false });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const { tex, display } = JSON.parse(line);
  process.stdout.write(JSON.stringify(render(tex, !!display)) + "\n");
});
