package ondevice.guard;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** A guard verdict, the fields of `guard classify --json` (guard/format/verdict.py). */
public final class Verdict {
  /** A violated category: its stable code ("S10") and name ("Hate"). */
  public static final class Category {
    public final String code;
    public final String name;

    Category(String code, String name) {
      this.code = code;
      this.name = name;
    }

    @Override
    public String toString() {
      return code + " " + name;
    }
  }

  /**
   * What the long-input policy applied to a conversation longer than the model (guard.runtime.long's record): whole
   * old turns dropped ({@code policy} "last_turns", {@code windows} 0), or the last turn cut into windows of
   * {@code windowTokens} tokens, the one judged being {@code chosenWindow} (token span {@code chosenSpan}).
   */
  public static final class Truncation {
    public final String policy; // "last_turns" or "windows"
    public final long promptTokens; // the whole conversation's prompt tokens
    public final long droppedTurns;
    public final int windows; // 0: whole turns only
    public final long windowTokens;
    public final int chosenWindow;
    public final long[] chosenSpan; // [begin, end) in the last turn's tokens
    public final double[] windowPUnsafe; // each window's p_unsafe, to 4 digits
    public final long contextTokens; // tokens of the user's prompt shown before a response's windows

    Truncation(String policy, long promptTokens, long droppedTurns, int windows, long windowTokens, int chosenWindow,
        long[] chosenSpan, double[] windowPUnsafe, long contextTokens) {
      this.policy = policy;
      this.promptTokens = promptTokens;
      this.droppedTurns = droppedTurns;
      this.windows = windows;
      this.windowTokens = windowTokens;
      this.chosenWindow = chosenWindow;
      this.chosenSpan = chosenSpan;
      this.windowPUnsafe = windowPUnsafe;
      this.contextTokens = contextTokens;
    }
  }

  /**
   * The cuts of a prompt that were judged too (guard.runtime.segments' record): {@code checked} cuts at sentence or
   * line ends, {@code chosen} the one that became the verdict (-1: none, the whole prompt's verdict stands).
   */
  public static final class Segments {
    public final int checked;
    public final int chosen; // -1: no cut was judged unsafe
    public final double[] pUnsafe; // each cut's p_unsafe, to 4 digits

    Segments(int checked, int chosen, double[] pUnsafe) {
      this.checked = checked;
      this.chosen = chosen;
      this.pUnsafe = pUnsafe;
    }
  }

  public final String decision; // "safe", "unsafe" or "indeterminate"
  public final List<Category> categories;
  public final double pUnsafe; // calibrated when calibration.json is beside the model
  public final double margin; // logit(unsafe) - logit(safe), before calibration
  public final boolean blocked; // unsafe, or indeterminate under the default blocking policy
  public final String role; // "User" or "Agent"
  public final String raw;
  public final String reason;
  public final long promptTokens;
  public final double latencyMs;
  public final double prefillMs;
  public final long reusedTokens;
  public final long prefilledTokens;
  /** The first 16 hex digits of the sha256 of the calibration.json that scored pUnsafe; null: the raw softmax. */
  public final String calibration;
  /** null: the whole conversation fit the model. */
  public final Truncation truncation;
  /** null: no cut of the prompt was judged (a response, an unsafe prompt, one sentence, or segment checks off). */
  public final Segments segments;
  private final String json;

  // Called from JNI.
  Verdict(String decision, String[] codes, String[] names, double pUnsafe, double margin, boolean blocked, String role,
      String raw, String reason, long promptTokens, double latencyMs, double prefillMs, long reusedTokens,
      long prefilledTokens, String calibration, Truncation truncation, Segments segments, String json) {
    this.decision = decision;
    List<Category> cats = new ArrayList<>();
    for (int i = 0; i < codes.length; i++) cats.add(new Category(codes[i], names[i]));
    this.categories = Collections.unmodifiableList(cats);
    this.pUnsafe = pUnsafe;
    this.margin = margin;
    this.blocked = blocked;
    this.role = role;
    this.raw = raw;
    this.reason = reason;
    this.promptTokens = promptTokens;
    this.latencyMs = latencyMs;
    this.prefillMs = prefillMs;
    this.reusedTokens = reusedTokens;
    this.prefilledTokens = prefilledTokens;
    this.calibration = calibration;
    this.truncation = truncation;
    this.segments = segments;
    this.json = json;
  }

  public boolean isSafe() {
    return decision.equals("safe");
  }

  /** The verdict as one JSON object, with the field names of `guard classify --json`. */
  public String toJson() {
    return json;
  }

  @Override
  public String toString() {
    return decision.toUpperCase() + (categories.isEmpty() ? "" : "  " + categories) + String.format("  p_unsafe=%.4f", pUnsafe);
  }
}
