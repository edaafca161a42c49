// The live transcript: a line per utterance, its deltas appended as they arrive (marked open), then replaced by
// the completed text (the final decode of the whole utterance may revise words the deltas sent).

const $ = (id) => document.getElementById(id);

export function clearStreamView() {
  $("utterances").replaceChildren();
  $("stream").hidden = false;
}

function line(itemId) {
  const found = [...$("utterances").children].find((li) => li.dataset.item === itemId);
  if (found) return found;
  const li = document.createElement("li");
  li.dataset.item = itemId;
  li.dataset.deltas = "0";
  li.className = "utterance open";
  $("utterances").append(li);
  return li;
}

// Every server event goes through here; the ones that are not about an utterance's text change nothing.
export function showStreamEvent(event) {
  const kind = event.type.replace("conversation.item.input_audio_transcription.", "transcription.");
  if (kind === "input_audio_buffer.speech_started") line(event.item_id);
  // what the line showed when the utterance ended: the text that came while the speaker was still talking
  if (kind === "input_audio_buffer.committed") {
    const li = line(event.item_id);
    li.dataset.shownWhileOpen = li.textContent;
  }
  if (kind === "transcription.delta") {
    const li = line(event.item_id);
    li.textContent += event.delta;
    li.dataset.deltas = String(Number(li.dataset.deltas) + 1);
  }
  if (kind === "transcription.completed") {
    const li = line(event.item_id);
    li.dataset.final = event.transcript;
    li.textContent = event.transcript || "(no words recognised)";
    li.className = event.transcript ? "utterance done" : "utterance done muted";
  }
  if (kind === "transcription.failed") {
    const li = line(event.item_id);
    li.textContent = `(not transcribed: ${event.error ? event.error.message : "failed"})`;
    li.className = "utterance failed";
  }
}
