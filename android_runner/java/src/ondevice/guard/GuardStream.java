package ondevice.guard;

import java.io.Closeable;

/**
 * Moderates a response while it is generated (guard/runtime/stream.py): feed() the generated text; a check runs every
 * checkEvery tokens, reusing the KV cache (only new tokens are prefilled). After an unsafe verdict the stream is final.
 */
public final class GuardStream implements Closeable {
  private final GuardModule module;
  private long handle;

  GuardStream(GuardModule module, long handle) {
    this.module = module;
    this.handle = handle;
  }

  /** Adds generated text; returns a verdict when a check ran (or the final one), else null. */
  public Verdict feed(String chunk) {
    if (chunk == null) throw new GuardException("chunk is null");
    synchronized (module) {
      module.live();
      return GuardModule.nativeStreamFeed(live(), chunk);
    }
  }

  /** The verdict for the whole response (Python's Stream.close()); close() then frees the stream. */
  public Verdict end() {
    synchronized (module) {
      module.live();
      return GuardModule.nativeStreamClose(live());
    }
  }

  @Override
  public void close() {
    synchronized (module) {
      if (handle != 0) GuardModule.nativeStreamFree(handle);
      handle = 0;
      module.forget(this);
    }
  }

  private long live() {
    if (handle == 0) throw new GuardException("the stream is closed");
    return handle;
  }
}
