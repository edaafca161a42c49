// Live transcription: the microphone streamed to /v1/realtime?intent=transcription (OpenAI's Realtime
// transcription protocol, server VAD) and the server's events handed to the page as they come: the open
// utterance's deltas, then its completed text.

const RATE = 24000; // OpenAI's pcm16 rate (the server takes 16 kHz too)
const STOP_WAIT_MS = 15000; // after Stop: how long to wait for the text of the speech already sent
const KEY_PROTOCOL = "openai-insecure-api-key."; // a browser cannot set headers on a WebSocket: the key goes here

function sessionUpdate(language) {
  const input = {
    format: { type: "audio/pcm", rate: RATE },
    transcription: { language },
    turn_detection: { type: "server_vad" },
  };
  return { type: "session.update", session: { type: "transcription", audio: { input } } };
}

// Base64 of little-endian 16-bit PCM (Int16Array is little-endian on every platform a browser runs on).
function base64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function opened(socket) {
  return new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("close", (e) => reject(new Error(`connection closed (${e.code} ${e.reason})`)),
      { once: true });
  });
}

// The microphone through a context at RATE where the browser offers one (else its own rate, resampled in the
// worklet) into the PCM chunker; `onChunk` gets each 100 ms as an ArrayBuffer.
async function openMicrophone(onChunk) {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  let context = new AudioContext({ sampleRate: RATE });
  let source;
  try {
    source = context.createMediaStreamSource(stream);
  } catch {
    await context.close(); // a browser that cannot resample a live stream into another rate
    context = new AudioContext();
    source = context.createMediaStreamSource(stream);
  }
  await context.audioWorklet.addModule("/playground/static/pcm-worklet.js");
  // no outputs: the browser pulls such a node by itself, and nothing is played back to the speakers
  const chunker = new AudioWorkletNode(context, "pcm-chunker",
    { numberOfInputs: 1, numberOfOutputs: 0, processorOptions: { targetRate: RATE } });
  chunker.port.onmessage = (message) => onChunk(message.data);
  source.connect(chunker);
  await context.resume(); // a context made after an await may start suspended (autoplay policy)
  return {
    close: async () => {
      stream.getTracks().forEach((track) => track.stop());
      chunker.port.onmessage = null;
      await context.close();
    },
  };
}

export class LiveStream {
  // handlers: onEvent(event) for every server event, onClose({code, reason}) once the socket is closed,
  // onProgress(seconds) as audio goes out.
  constructor(handlers) {
    this.handlers = handlers;
    this.socket = null;
    this.microphone = null;
    this.speaking = false; // between speech_started and speech_stopped: an utterance is open
    this.waiting = new Set(); // committed items without their text yet
    this.committing = false; // a commit sent, its `committed` (or error) not yet back
    this.stopping = false;
    this.secondsSent = 0;
  }

  async start({ language, apiKey }) {
    if (!window.AudioWorkletNode || !navigator.mediaDevices) {
      throw new Error("this browser cannot stream the microphone here (it needs https or localhost)");
    }
    const url = new URL("/v1/realtime?intent=transcription", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const protocols = apiKey ? ["realtime", KEY_PROTOCOL + apiKey] : ["realtime"];
    this.socket = new WebSocket(url, protocols);
    this.socket.addEventListener("message", (message) => this.onMessage(JSON.parse(message.data)));
    this.socket.addEventListener("close", (event) => this.onClose(event));
    await opened(this.socket);
    this.socket.send(JSON.stringify(sessionUpdate(language)));
    this.microphone = await openMicrophone((chunk) => this.sendAudio(chunk));
    if (this.socket.readyState !== WebSocket.OPEN) { // refused while the microphone opened (no key, busy)
      await this.releaseMicrophone();
      throw new Error("the server closed the session");
    }
  }

  sendAudio(chunk) {
    this.send({ type: "input_audio_buffer.append", audio: base64(chunk) });
    this.secondsSent += chunk.byteLength / 2 / RATE;
    if (this.handlers.onProgress) this.handlers.onProgress(this.secondsSent);
  }

  send(event) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  onMessage(event) {
    if (event.type === "input_audio_buffer.speech_started") this.speaking = true;
    if (event.type === "input_audio_buffer.speech_stopped") this.speaking = false;
    if (event.type === "input_audio_buffer.committed") {
      this.waiting.add(event.item_id);
      this.committing = false;
    }
    if (event.type === "error") this.committing = false; // e.g. the commit found the buffer empty
    if (/input_audio_transcription\.(completed|failed)$/.test(event.type)) this.waiting.delete(event.item_id);
    this.handlers.onEvent(event);
    if (this.stopping) this.closeWhenDone();
  }

  closeWhenDone() {
    if (!this.speaking && !this.committing && this.waiting.size === 0) this.socket.close(1000, "done");
  }

  async onClose(event) {
    await this.releaseMicrophone();
    this.handlers.onClose({ code: event.code, reason: event.reason });
  }

  async releaseMicrophone() {
    const microphone = this.microphone;
    this.microphone = null;
    if (microphone) await microphone.close();
  }

  // Stop the microphone, commit the open utterance, and close once every utterance sent has its text (or after
  // STOP_WAIT_MS).
  async stop() {
    this.stopping = true;
    await this.releaseMicrophone();
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (this.speaking) {
      this.speaking = false;
      this.committing = true;
      this.send({ type: "input_audio_buffer.commit" });
    }
    this.closeWhenDone();
    setTimeout(() => this.socket.close(1000, "stopped"), STOP_WAIT_MS); // a no-op once closed
  }
}
