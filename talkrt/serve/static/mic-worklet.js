// Microphone capture: mono float input at the context's rate -> PCM16 chunks at the session's
// rate (processorOptions.targetRate), chunkSamples long, posted to the page as ArrayBuffers.
// Downsampling first runs a 2-pole low-pass at 0.45 x the target rate, then interpolates linearly.
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, chunkSamples } = options.processorOptions;
    this.step = sampleRate / targetRate; // input samples per output sample
    this.chunkSamples = chunkSamples;
    this.chunk = new Int16Array(chunkSamples);
    this.filled = 0;
    this.position = 0; // position of the next output sample, in input samples from `previous`
    this.previous = 0;
    this.filter = null;
    if (this.step > 1) {
      const w = (2 * Math.PI * 0.45 * targetRate) / sampleRate;
      const alpha = Math.sin(w) / Math.SQRT2;
      const a0 = 1 + alpha;
      const c = Math.cos(w);
      this.filter = {
        b0: (1 - c) / 2 / a0, b1: (1 - c) / a0, b2: (1 - c) / 2 / a0,
        a1: (-2 * c) / a0, a2: (1 - alpha) / a0, x1: 0, x2: 0, y1: 0, y2: 0,
      };
    }
  }

  lowpass(x) {
    const f = this.filter;
    if (!f) return x;
    const y = f.b0 * x + f.b1 * f.x1 + f.b2 * f.x2 - f.a1 * f.y1 - f.a2 * f.y2;
    f.x2 = f.x1; f.x1 = x; f.y2 = f.y1; f.y1 = y;
    return y;
  }

  emit(value) {
    const clamped = Math.max(-1, Math.min(1, value));
    this.chunk[this.filled++] = clamped < 0 ? clamped * 32768 : clamped * 32767;
    if (this.filled === this.chunkSamples) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]); // transferred: make a new one
      this.chunk = new Int16Array(this.chunkSamples);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let x = 0;
      for (let c = 0; c < input.length; c++) x += input[c][i];
      x = this.lowpass(x / input.length);
      // Output samples that fall between `previous` (position 0) and x (position 1).
      while (this.position <= 1) {
        this.emit(this.previous + (x - this.previous) * this.position);
        this.position += this.step;
      }
      this.position -= 1;
      this.previous = x;
    }
    return true;
  }
}

registerProcessor("talkrt-pcm-capture", PcmCapture);
