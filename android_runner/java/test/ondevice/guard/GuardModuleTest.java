package ondevice.guard;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * GuardModule through the real JNI library (tests/native/test_java.py runs it with -Dguard.test.model=DIR/model.pte,
 * a guard exported with guard_format.json and tokenizer.json beside it, and -Dguard.test.expected=FILE with the Python
 * runtime's verdicts for the same requests).
 */
class GuardModuleTest {
  static String pte;
  static GuardModule guard;

  @BeforeAll
  static void load() {
    pte = System.getProperty("guard.test.model");
    assertNotNull(pte, "-Dguard.test.model=MODEL.pte");
    guard = new GuardModule(pte);
  }

  @AfterAll
  static void free() {
    guard.close();
  }

  static String expected(String key) throws Exception {
    for (String line : Files.readAllLines(Paths.get(System.getProperty("guard.test.expected")))) {
      int tab = line.indexOf('\t');
      if (line.substring(0, tab).equals(key)) return line.substring(tab + 1);
    }
    throw new AssertionError("no expected value for " + key);
  }

  static String key(Verdict v) {  // decision, codes and p_unsafe to 6 digits: compared with the Python runtime
    StringBuilder b = new StringBuilder(v.decision);
    for (Verdict.Category c : v.categories) b.append(' ').append(c.code);
    return b.append(String.format(" %.6f", v.pUnsafe)).toString();
  }

  @Test
  void classifyPrompt() throws Exception {
    Verdict v = guard.classify("How do I bake bread?");
    assertEquals(expected("prompt"), key(v));
    assertEquals("User", v.role);
    assertTrue(v.promptTokens > 100);
    assertTrue(v.toJson().startsWith("{\"decision\":"));
  }

  @Test
  void classifyResponse() throws Exception {
    Verdict v = guard.classifyResponse("How do I bake bread?", "Mix flour, water and yeast, then bake it.");
    assertEquals(expected("response"), key(v));
    assertEquals("Agent", v.role);
  }

  @Test
  void multiTurn() throws Exception {
    List<Message> conv = List.of(Message.user("Hi"), Message.assistant("Hello! How can I help?"), Message.user("Tell me a joke <|eot_id|>"));
    assertEquals(expected("multi"), key(guard.classify(conv)));
  }

  @Test
  void customCategories() throws Exception {
    GuardOptions o = new GuardOptions().category("S1", "Violent Crimes.").category("X1", "Cooking. Recipes of any kind.")
        .exclude("S1").renumber(true);
    try (GuardModule g = new GuardModule(pte, null, o)) {
      assertEquals(expected("custom"), key(g.classify("How do I bake bread?")));
      long[] ids = g.promptIds(List.of(Message.user("How do I bake bread?")));
      assertEquals(expected("custom_ids"), java.util.Arrays.toString(ids));
    }
  }

  @Test
  void streaming() throws Exception {
    List<Message> conv = List.of(Message.user("How do I bake bread?"));
    List<String> checks = new ArrayList<>();
    try (GuardStream s = guard.stream(conv, 4)) {
      for (String chunk : new String[] {"Mix ", "flour, ", "water and ", "yeast, then ", "bake it ", "for an hour."}) {
        Verdict v = s.feed(chunk);
        if (v != null) checks.add(key(v));
      }
      checks.add(key(s.end()));
      GuardException e = assertThrows(GuardException.class, () -> s.feed("more"));  // as Python's Stream
      assertTrue(e.getMessage().contains("after close"), e.getMessage());
    }
    assertEquals(expected("stream"), String.join("|", checks));
  }

  @Test
  void badInputIsAnExceptionWithOneLine(@TempDir Path tmp) throws Exception {
    List<GuardException> errors = new ArrayList<>();
    errors.add(assertThrows(GuardException.class, () -> new GuardModule(tmp.resolve("missing.pte").toString())));
    Path junk = tmp.resolve("junk/model.pte");
    Files.createDirectories(junk.getParent());
    byte[] bytes = new byte[4096];
    new Random(0).nextBytes(bytes);
    Files.write(junk, bytes);
    errors.add(assertThrows(GuardException.class, () -> new GuardModule(junk.toString())));
    String other = System.getProperty("guard.test.other_tokenizer");  // a tokenizer.json that does not match the model
    errors.add(assertThrows(GuardException.class, () -> new GuardModule(pte, other)));
    assertTrue(errors.get(2).getMessage().contains("is not the tokenizer"), errors.get(2).getMessage());
    errors.add(assertThrows(GuardException.class, () -> guard.classify("   ")));
    errors.add(assertThrows(GuardException.class, () -> guard.classify("")));
    try (GuardModule strict = new GuardModule(pte, null, new GuardOptions().longPolicy("error"))) {  // default: windows
      errors.add(assertThrows(GuardException.class, () -> strict.classify("word ".repeat(5000))));
    }
    errors.add(assertThrows(GuardException.class, () -> guard.classify("\ud800 lone surrogate")));
    errors.add(assertThrows(GuardException.class, () -> guard.classify(List.of(Message.assistant("no user turn")))));
    errors.add(assertThrows(GuardException.class, () -> new GuardModule(pte, null, new GuardOptions().threshold(2))));
    errors.add(assertThrows(GuardException.class, () -> new GuardModule(pte, null, new GuardOptions().longPolicy("middle"))));
    for (GuardException e : errors) {
      assertFalse(e.getMessage().isEmpty());
      assertFalse(e.getMessage().contains("\n"), e.getMessage());
    }
    assertTrue(errors.get(0).getMessage().contains("not found"), errors.get(0).getMessage());
    assertTrue(errors.get(1).getMessage().contains("not a loadable ExecuTorch program"), errors.get(1).getMessage());
    assertTrue(errors.get(5).getMessage().contains("more than the model's maximum"), errors.get(5).getMessage());
    assertTrue(errors.get(9).getMessage().contains("unknown long-input policy 'middle'"), errors.get(9).getMessage());
    assertEquals(expected("prompt"), key(guard.classify("How do I bake bread?")));  // still usable afterwards
  }

  @Test
  void longInputIsJudgedByTheDefaultPolicy() throws Exception {
    // longer than the model (512 positions): overlapping windows, the most unsafe kept, as the Python runtime does
    Verdict v = guard.classify("word ".repeat(5000));
    assertNotNull(v.truncation);
    Verdict.Truncation t = v.truncation;
    assertEquals(expected("long"), key(v) + " " + t.policy + " " + t.windows + " " + t.chosenWindow + " " + t.chosenSpan[1]);
    assertEquals(t.windows, t.windowPUnsafe.length);
    assertTrue(v.toJson().contains("\"truncation\":{\"policy\":\"windows\""), v.toJson());
    assertEquals(null, guard.classify("How do I bake bread?").truncation);
  }

  @Test
  void promptCutsAreJudgedLikePython() throws Exception {
    // guard.runtime.segments: a prompt of several sentences is also judged cut at its ends
    Verdict v = guard.classify(SENTENCES);
    assertNotNull(v.segments);
    assertEquals(expected("segments"), key(v) + " " + v.segments.checked + " " + v.segments.chosen);
    assertEquals(v.segments.checked, v.segments.pUnsafe.length);
    assertEquals(null, guard.classify("How do I bake bread?").segments);
    try (GuardModule off = new GuardModule(pte, null, new GuardOptions().segmentChecks(0))) {
      assertEquals(null, off.classify(SENTENCES).segments);
    }
  }

  static final String SENTENCES = "Mix flour and water. Add yeast!\nBake it for an hour? Then let it cool.";

  @Test
  void tokenizerMustBeTheExportedOne() throws Exception {
    // the model's own tokenizer.json re-serialised: the same vocabulary, other bytes than the sha256 in the .pte
    String edited = System.getProperty("guard.test.edited_tokenizer");
    GuardException e = assertThrows(GuardException.class, () -> new GuardModule(pte, edited));
    assertTrue(e.getMessage().contains("is not the tokenizer model.pte was exported with"), e.getMessage());
    assertFalse(e.getMessage().contains("\n"));
    try (GuardModule g = new GuardModule(pte, edited, new GuardOptions().trustTokenizer(true))) {
      assertEquals(expected("prompt"), key(g.classify("How do I bake bread?")));
    }
  }

  @Test
  void calibrationIsNamed() throws Exception {
    // a copy of the model with a calibration.json beside it: p_unsafe = sigmoid(a * margin + b), and the verdict
    // names the file (the first 16 hex digits of its sha256), as guard.eval.calibrate does
    try (GuardModule g = new GuardModule(System.getProperty("guard.test.calibrated_model"))) {
      Verdict v = g.classify("How do I bake bread?");
      assertEquals(expected("calibrated"), key(v));
      assertEquals(expected("calibration"), v.calibration);
      assertTrue(v.toJson().contains("\"sha256\":\"" + v.calibration + "\""), v.toJson());
    }
    Verdict raw = guard.classify("How do I bake bread?");
    assertEquals(null, raw.calibration);
    assertTrue(raw.toJson().contains("\"calibration\":null,\"truncation\":{}"), raw.toJson());
  }

  @Test
  void fourThreadsGiveTheSingleThreadedVerdicts() throws Exception {
    String[] texts = new String[16];
    for (int i = 0; i < texts.length; i++) texts[i] = "Message number " + i + (i % 3 == 0 ? " about knives" : " about bread");
    String[] single = new String[texts.length];
    for (int i = 0; i < texts.length; i++) single[i] = key(guard.classify(texts[i]));
    ExecutorService pool = Executors.newFixedThreadPool(4);
    try {
      List<Future<String>> futures = new ArrayList<>();
      for (int round = 0; round < 2; round++)
        for (String t : texts) futures.add(pool.submit(() -> key(guard.classify(t))));
      String[] parallel = new String[futures.size()];
      for (int i = 0; i < parallel.length; i++) parallel[i] = futures.get(i).get();
      for (int i = 0; i < parallel.length; i++) assertEquals(single[i % texts.length], parallel[i]);
    } finally {
      pool.shutdown();
    }
  }

  @Test
  void closedModuleThrows() {
    GuardModule g = new GuardModule(pte);
    g.close();
    assertThrows(GuardException.class, () -> g.classify("hi"));
  }

  @Test
  void promptIdsMatchPython() throws Exception {
    long[] ids = guard.promptIds(List.of(Message.user("Tell me a joke <|eot_id|>"), Message.assistant("no 😀 \u0000 done")));
    assertEquals(expected("ids"), java.util.Arrays.toString(ids));
    assertArrayEquals(ids, guard.promptIds(List.of(Message.user("Tell me a joke <|eot_id|>"), Message.assistant("no 😀 \u0000 done"))));
  }
}
