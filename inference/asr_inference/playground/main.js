// Wiring: the form (file or recording, options, API key), one request at a time, the result or the error.

import { apiKey, fetchConfig, setApiKey, transcribe } from "./api.js";
import { startLivePanel } from "./live.js";
import { Recorder } from "./recorder.js";
import { LiveStream } from "./stream.js";
import { clearStreamView, showStreamEvent } from "./stream-view.js";
import { highlight, render } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const recorder = new Recorder();
let audio = null; // {blob, filename}: the upload or the last recording
let playerUrl = null;
let live = null; // the LiveStream while live mode runs

function setState(state) {
  document.body.dataset.state = state; // idle | busy | done | error (also what the browser test waits for)
}

// The microphone's state: idle | recording | recorded | error (the browser test waits for "recorded").
function setRecordState(state, text) {
  document.body.dataset.record = state;
  $("record-state").textContent = text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function useAudio(blob, filename) {
  audio = { blob, filename };
  if (playerUrl) URL.revokeObjectURL(playerUrl);
  playerUrl = URL.createObjectURL(blob);
  $("player").src = playerUrl;
  $("submit").disabled = false;
}

function fillSelect(select, values, chosen) {
  select.replaceChildren(...values.map((v) => new Option(v, v, v === chosen, v === chosen)));
}

async function configure() {
  const config = await fetchConfig();
  fillSelect($("format"), config.response_formats, "verbose_json");
  const languages = config.languages ? ["auto", ...config.languages.filter((l) => l !== "auto")] : ["auto"];
  fillSelect($("language"), languages, "auto");
  $("apikey-label").hidden = !config.api_key_required;
  $("apikey").value = apiKey();
  document.title = `${config.model} · asr-platform playground`;
}

async function onSubmit(event) {
  event.preventDefault();
  if (!audio) return;
  showError("");
  $("result").hidden = true; // an error must not sit under the previous file's transcript
  setState("busy");
  $("submit").disabled = true;
  const options = { format: $("format").value, language: $("language").value, words: $("words").checked };
  try {
    const result = await transcribe(audio.blob, audio.filename, options);
    if (!result.ok) {
      const hint = result.status === 401 ? " — enter the server's API key above" : "";
      showError(`${audio.filename}: ${result.error}${hint}`);
      setState("error");
      return;
    }
    render(result, $("player"));
    setState("done");
  } catch (error) {
    showError(`request failed: ${error.message}`);
    setState("error");
  } finally {
    $("submit").disabled = false;
  }
}

async function onRecord() {
  showError("");
  try {
    if (recorder.recording) {
      const { blob, filename } = await recorder.stop();
      $("record").textContent = "● Record";
      $("record").classList.remove("recording");
      $("file").value = "";
      useAudio(blob, filename);
      setRecordState("recorded", `recorded ${(blob.size / 1024).toFixed(0)} KiB`);
    } else {
      await recorder.start();
      $("record").textContent = "■ Stop";
      $("record").classList.add("recording");
      setRecordState("recording", "recording…");
    }
  } catch (error) {
    setRecordState("error", "");
    showError(`microphone: ${error.message}`);
  }
}

// Live mode's state: idle | connecting | streaming | stopping | stopped | error (the browser test waits on it).
function setStreamState(state, text) {
  document.body.dataset.stream = state;
  $("stream-state").textContent = text;
  $("live-stream").textContent = ["connecting", "streaming"].includes(state) ? "■ Stop live" : "◉ Live";
  $("live-stream").classList.toggle("recording", state === "streaming");
  $("record").disabled = ["connecting", "streaming", "stopping"].includes(state);
}

function onStreamEvent(event) {
  showStreamEvent(event);
  if (event.type === "error") showError(`live: ${event.error.message} (${event.error.code || event.error.type})`);
}

function onStreamClosed({ code, reason }) {
  live = null;
  const clean = code === 1000 || code === 1005; // closed by the page (1005: no status sent)
  setStreamState(clean ? "stopped" : "error", clean ? "stopped" : `closed by the server: ${code} ${reason}`.trim());
}

async function onLive() {
  if (live) {
    setStreamState("stopping", "finishing the last words…");
    await live.stop();
    return;
  }
  showError("");
  clearStreamView();
  setStreamState("connecting", "connecting…");
  const onProgress = (seconds) => {
    if (document.body.dataset.stream === "streaming") $("stream-state").textContent = `listening… ${seconds.toFixed(0)} s`;
  };
  live = new LiveStream({ onEvent: onStreamEvent, onClose: onStreamClosed, onProgress });
  try {
    await live.start({ language: $("language").value, apiKey: apiKey() });
    setStreamState("streaming", "listening…");
  } catch (error) {
    // a refused session (no API key, server busy) has already said why in an error event and its close
    if ($("error").hidden) showError(`live: ${error.message}`);
    if (live) await live.stop();
    live = null;
    if (document.body.dataset.stream === "connecting") setStreamState("error", "");
  }
}

function init() {
  setState("idle");
  setRecordState("idle", "");
  setStreamState("idle", "");
  recorder.onProgress = (seconds) => setRecordState("recording", `recording… ${seconds.toFixed(0)} s`);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) useAudio(file, file.name);
  });
  $("record").addEventListener("click", onRecord);
  $("live-stream").addEventListener("click", onLive);
  $("apikey").addEventListener("change", () => setApiKey($("apikey").value.trim()));
  $("request").addEventListener("submit", onSubmit);
  $("player").addEventListener("timeupdate", () => highlight($("player").currentTime));
  configure().catch((error) => showError(`cannot read the playground config: ${error.message}`));
  startLivePanel(() => {});
}

init();
