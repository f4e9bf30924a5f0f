package ondevice.guard;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Policy and scoring options (guard classify's --categories, --exclude, --renumber, --threshold, ...). */
public final class GuardOptions {
  private final List<String> codes = new ArrayList<>();
  private final Map<String, String> custom = new LinkedHashMap<>();
  private final List<String> exclude = new ArrayList<>();
  private boolean renumber = false;
  private double threshold = 0.5;
  private boolean blockIndeterminate = true;
  private boolean calibrated = true;
  private boolean trustTokenizer = false;
  private String longPolicy = "windows";
  private int segmentChecks = 4;

  /** Standard categories by code ("S1", "S10", "S14"); default S1-S13. */
  public GuardOptions categories(List<String> standardCodes) {
    codes.addAll(standardCodes);
    return this;
  }

  /** A custom category: code ("S15") and "Name. description" as in a categories JSON file. */
  public GuardOptions category(String code, String nameAndDescription) {
    custom.put(code, nameAndDescription);
    return this;
  }

  public GuardOptions exclude(String... codesToExclude) {
    for (String c : codesToExclude) exclude.add(c);
    return this;
  }

  public GuardOptions renumber(boolean on) {
    renumber = on;
    return this;
  }

  public GuardOptions threshold(double p) {
    threshold = p;
    return this;
  }

  public GuardOptions blockIndeterminate(boolean on) {
    blockIndeterminate = on;
    return this;
  }

  public GuardOptions calibrated(boolean on) {
    calibrated = on;
    return this;
  }

  /**
   * Accept a tokenizer other than the one the model was exported with (the .pte records its tokenizer.json's
   * sha256; by default another file is refused, as guard's --trust-tokenizer).
   */
  public GuardOptions trustTokenizer(boolean on) {
    trustTokenizer = on;
    return this;
  }

  /**
   * A conversation longer than the model: "windows" (default, as guard's Python runtime: keep the latest whole turns
   * that fit; a last turn too long alone is judged in overlapping windows, the most unsafe kept), "last_turns" (only
   * its last tokens) or "error" (a GuardException). The verdict's {@link Verdict#truncation} says what was applied.
   */
  public GuardOptions longPolicy(String policy) {
    if (policy == null) throw new GuardException("long-input policy is null");
    longPolicy = policy;
    return this;
  }

  /**
   * How many cuts of a prompt are judged too when the whole is not judged unsafe (default 4; 0: off): the prompt cut
   * at its sentence or line ends, so a harmful request followed by other text is caught (guard.runtime.segments).
   * The verdict's {@link Verdict#segments} records them.
   */
  public GuardOptions segmentChecks(int checks) {
    if (checks < 0) throw new GuardException("segment checks must be >= 0, got " + checks);
    segmentChecks = checks;
    return this;
  }

  String toJson(String tokenizerPath) {
    StringBuilder b = new StringBuilder("{");
    if (tokenizerPath != null) b.append("\"tokenizer\":").append(quote(tokenizerPath)).append(',');
    if (!custom.isEmpty()) {
      if (!codes.isEmpty()) throw new GuardException("give standard codes or custom categories, not both");
      b.append("\"categories\":{");
      int i = 0;
      for (Map.Entry<String, String> e : custom.entrySet())
        b.append(i++ > 0 ? "," : "").append(quote(e.getKey())).append(':').append(quote(e.getValue()));
      b.append("},");
    } else if (!codes.isEmpty()) {
      b.append("\"categories\":").append(list(codes)).append(',');
    }
    if (!exclude.isEmpty()) b.append("\"exclude\":").append(list(exclude)).append(',');
    b.append("\"renumber\":").append(renumber).append(",\"threshold\":").append(threshold);
    b.append(",\"block_indeterminate\":").append(blockIndeterminate).append(",\"calibrated\":").append(calibrated);
    b.append(",\"trust_tokenizer\":").append(trustTokenizer).append(",\"long_policy\":").append(quote(longPolicy));
    b.append(",\"segment_checks\":").append(segmentChecks);
    return b.append('}').toString();
  }

  private static String list(List<String> xs) {
    StringBuilder b = new StringBuilder("[");
    for (int i = 0; i < xs.size(); i++) b.append(i > 0 ? "," : "").append(quote(xs.get(i)));
    return b.append(']').toString();
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}
