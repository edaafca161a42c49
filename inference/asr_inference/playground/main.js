// Wiring: the form (file or recording, options, API key), one request at a time, the result or the error.

import { apiKey, fetchConfig, setApiKey, transcribe } from "./api.js";
import { startLivePanel } from "./live.js";
import { Recorder } from "./recorder.js";
import { highlight, render } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const recorder = new Recorder();
let audio = null; // {blob, filename}: the upload or the last recording
let playerUrl = null;

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

function init() {
  setState("idle");
  setRecordState("idle", "");
  recorder.onProgress = (seconds) => setRecordState("recording", `recording… ${seconds.toFixed(0)} s`);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) useAudio(file, file.name);
  });
  $("record").addEventListener("click", onRecord);
  $("apikey").addEventListener("change", () => setApiKey($("apikey").value.trim()));
  $("request").addEventListener("submit", onSubmit);
  $("player").addEventListener("timeupdate", () => highlight($("player").currentTime));
  configure().catch((error) => showError(`cannot read the playground config: ${error.message}`));
  startLivePanel(() => {});
}

init();
