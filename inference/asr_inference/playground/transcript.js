// Rendering one transcription: the text, the segments (with times), the words on a timeline, and the
// highlight of the segment and word under the audio player's current time.

const $ = (id) => document.getElementById(id);

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - m * 60).toFixed(2).padStart(5, "0");
  return `${m}:${s}`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderSegments(segments, player) {
  const list = $("segments");
  list.replaceChildren();
  for (const segment of segments) {
    const item = element("li", "segment");
    item.dataset.start = segment.start;
    item.dataset.end = segment.end;
    item.append(element("span", "time", `${clock(segment.start)} – ${clock(segment.end)}`));
    const tags = [segment.emotion, segment.event].filter(Boolean).join(" ");
    item.append(element("span", "text", segment.text + (tags ? `  [${tags}]` : "")));
    item.addEventListener("click", () => { player.currentTime = segment.start; player.play(); });
    list.append(item);
  }
}

function renderTimeline(words, duration, player) {
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.hidden = !words.length;
  const span = Math.max(duration, ...words.map((w) => w.end), 0.001);
  for (const word of words) {
    const node = element("span", "word");
    node.append(element("span", "label", word.word));
    node.style.left = `${(100 * word.start) / span}%`;
    node.style.width = `${Math.max((100 * (word.end - word.start)) / span, 0.5)}%`;
    node.title = `${word.word}  ${clock(word.start)} – ${clock(word.end)}`;
    node.dataset.start = word.start;
    node.dataset.end = word.end;
    node.addEventListener("click", () => { player.currentTime = word.start; player.play(); });
    timeline.append(node);
  }
  const cursor = element("div", "cursor");
  cursor.dataset.span = span;
  timeline.append(cursor);
}

// Highlights whatever contains time t (segments, words) and moves the timeline cursor.
export function highlight(t) {
  for (const node of document.querySelectorAll("#segments .segment, #timeline .word")) {
    node.classList.toggle("current", Number(node.dataset.start) <= t && t < Number(node.dataset.end));
  }
  const cursor = document.querySelector("#timeline .cursor");
  if (cursor) cursor.style.left = `${(100 * t) / Number(cursor.dataset.span)}%`;
}

function timingLine(result) {
  const t = result.timing;
  const parts = [];
  if (t.cache) parts.push("served from the result cache");
  if (typeof t.queue === "number") parts.push(`queue ${t.queue.toFixed(1)} ms`);
  if (typeof t.inference === "number") parts.push(`inference ${t.inference.toFixed(1)} ms`);
  if (typeof t.total === "number") parts.push(`server total ${t.total.toFixed(1)} ms`);
  parts.push(`round trip ${result.roundTripMs.toFixed(1)} ms`);
  return parts.join(" · ");
}

export function render(result, player) {
  const body = result.body;
  const structured = typeof body === "object" && body !== null;
  $("transcript-text").textContent = structured ? body.text : result.format === "text" ? body : "";
  $("raw").hidden = structured && result.format !== "text";
  $("raw").textContent = structured ? "" : body;
  renderSegments(structured && body.segments ? body.segments : [], player);
  const words = structured && body.words ? body.words : [];
  renderTimeline(words, structured && body.duration ? body.duration : 0, player);
  $("timing").textContent = timingLine(result);
  $("result").hidden = false;
  highlight(player.currentTime || 0);
}
