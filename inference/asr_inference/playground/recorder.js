// Microphone recording with MediaRecorder: start() asks for the mic, stop() resolves with the recording.

const SLICE_MS = 1000; // MediaRecorder hands over data every second: the page shows how much is recorded

export class Recorder {
  constructor() {
    this.mediaRecorder = null;
    this.chunks = [];
    this.onProgress = () => {}; // called with the seconds recorded so far
  }

  get recording() {
    return this.mediaRecorder !== null && this.mediaRecorder.state === "recording";
  }

  async start() {
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      throw new Error("this browser cannot record audio here (the microphone needs https or localhost)");
    }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    this.chunks = [];
    this.mediaRecorder = new MediaRecorder(stream);
    this.mediaRecorder.addEventListener("dataavailable", (event) => {
      if (event.data.size > 0) this.chunks.push(event.data);
      if (this.recording) this.onProgress((this.chunks.length * SLICE_MS) / 1000);
    });
    this.mediaRecorder.start(SLICE_MS);
  }

  // Resolves with {blob, filename}; the server decodes webm/ogg (opus) through ffmpeg.
  stop() {
    return new Promise((resolve) => {
      const recorder = this.mediaRecorder;
      recorder.addEventListener("stop", () => {
        recorder.stream.getTracks().forEach((track) => track.stop());
        const type = recorder.mimeType || "audio/webm";
        const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
        resolve({ blob: new Blob(this.chunks, { type }), filename: `recording.${extension}` });
        this.mediaRecorder = null;
      }, { once: true });
      recorder.stop();
    });
  }
}
