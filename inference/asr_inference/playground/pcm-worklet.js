// An AudioWorklet processor: the microphone's first channel as 16-bit PCM at `targetRate`, handed to the page in
// 100 ms chunks (transferred, not copied). Runs on the audio thread, so the page's work never drops samples.

const CHUNK_S = 0.1;

class PcmChunker extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.targetRate = options.processorOptions.targetRate;
    // `sampleRate` is the context's rate. The page asks for a context at targetRate (Chromium resamples the
    // microphone well); where a browser cannot give one, this steps through the input by linear interpolation.
    this.step = sampleRate / this.targetRate;
    this.position = 0; // where the next output sample falls between input samples
    this.previous = 0; // the last input sample of the block before (interpolation across blocks)
    this.chunkSize = Math.round(this.targetRate * CHUNK_S);
    this.chunk = new Int16Array(this.chunkSize);
    this.filled = 0;
  }

  push(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === this.chunkSize) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]); // detaches it: a fresh one follows
      this.chunk = new Int16Array(this.chunkSize);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true; // no microphone data this block (not yet started, or muted)
    if (this.step === 1) {
      for (const value of input) this.push(value);
      return true;
    }
    // positions count input samples from this block's first; -1 is the last sample of the block before
    const at = (k) => (k < 0 ? this.previous : input[k]);
    for (; this.position < input.length - 1; this.position += this.step) {
      const index = Math.floor(this.position);
      this.push(at(index) + (at(index + 1) - at(index)) * (this.position - index));
    }
    this.position -= input.length;
    this.previous = input[input.length - 1];
    return true;
  }
}

registerProcessor("pcm-chunker", PcmChunker);
