package ondevice.guard;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * guard-java: GuardModule from the command line, the flags and JSON fields of guard classify / guard_classify:
 * --pte MODEL.pte [--response TEXT] [--json] [--categories S1,S10] [--exclude S6] [--renumber]
 * [--long-policy windows|last_turns|error] [--segment-checks N] TEXT
 */
public final class Cli {
  public static void main(String[] args) {
    System.exit(run(args));
  }

  static int run(String[] args) {
    String pte = null, text = null, response = null, tokenizer = null;
    boolean json = false;
    GuardOptions o = new GuardOptions();
    try {
      for (int i = 0; i < args.length; i++) {
        String a = args[i];
        boolean hasValue = i + 1 < args.length;
        switch (a) {
          case "--pte": pte = value(args, ++i, a); break;
          case "--response": response = value(args, ++i, a); break;
          case "--tokenizer": tokenizer = value(args, ++i, a); break;
          case "--json": json = true; break;
          case "--categories": o.categories(codes(value(args, ++i, a))); break;
          case "--exclude": o.exclude(codes(value(args, ++i, a)).toArray(new String[0])); break;
          case "--renumber": o.renumber(true); break;
          case "--threshold": o.threshold(Double.parseDouble(value(args, ++i, a))); break;
          case "--indeterminate": o.blockIndeterminate(!value(args, ++i, a).equals("pass")); break;
          case "--uncalibrated": o.calibrated(false); break;
          case "--trust-tokenizer": o.trustTokenizer(true); break;
          case "--long-policy": o.longPolicy(value(args, ++i, a)); break;
          case "--segment-checks": o.segmentChecks(Integer.parseInt(value(args, ++i, a))); break;
          default:
            if (a.startsWith("--") || text != null) throw new GuardException("unrecognized arguments: " + a);
            text = a;
        }
      }
      if (pte == null) throw new GuardException("the following arguments are required: --pte");
      if (text == null) text = new String(System.in.readAllBytes(), StandardCharsets.UTF_8);
      if (text.strip().isEmpty()) throw new GuardException("empty text: nothing to classify");
      try (GuardModule g = new GuardModule(pte, tokenizer, o)) {
        Verdict v = response != null ? g.classifyResponse(text, response) : g.classify(text);
        System.out.println(json ? v.toJson() : v + "  role=" + v.role + (v.reason.isEmpty() ? "" : "  (" + v.reason + ")"));
        if (v.decision.equals("indeterminate")) return v.blocked ? 11 : 0;
        return v.decision.equals("unsafe") ? 10 : 0;
      }
    } catch (GuardException | java.io.IOException | NumberFormatException e) {
      System.err.println("guard-java: error: " + e.getMessage());
      return 2;
    }
  }

  private static String value(String[] args, int i, String flag) {
    if (i >= args.length) throw new GuardException("argument " + flag + ": expected one argument");
    return args[i];
  }

  private static List<String> codes(String s) {
    List<String> out = new ArrayList<>();
    for (String c : Arrays.asList(s.split(","))) if (!c.strip().isEmpty()) out.add(c.strip().toUpperCase());
    return out;
  }
}
