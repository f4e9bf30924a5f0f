package ondevice.guard;

import java.io.Closeable;
import java.util.List;

/**
 * The on-device Llama Guard classifier (android_runner/guard/, over JNI), in the manner of ExecuTorch's LlmModule:
 * constructed from the model and tokenizer paths, then classify calls; close() frees the native module.
 *
 * <pre>
 * try (GuardModule guard = new GuardModule("/data/local/tmp/guard/model.pte")) {
 *   Verdict v = guard.classify("How do I bake bread?");
 *   if (v.blocked) ...
 * }
 * </pre>
 *
 * Threading: a GuardModule may be shared by threads. Its calls (and its streams' calls) hold the module's lock, so
 * they run one at a time on the one KV cache and give exactly the verdicts of a single thread. For parallel
 * classification use one GuardModule per thread (each holds its own copy of the model state).
 * Errors (missing or corrupt model, mismatched tokenizer, empty or too long text) are GuardException with a
 * one-line message.
 */
public class GuardModule implements Closeable {
  static {
    String lib = System.getProperty("guard.jni.library");
    if (lib != null) System.load(lib);
    else System.loadLibrary("guard_jni");
  }

  private long handle;
  private final List<GuardStream> streams = new java.util.ArrayList<>();  // freed before the module

  /** model.pte with tokenizer.json (or tokenizer.model), guard_format.json and calibration.json beside it. */
  public GuardModule(String modelPath) {
    this(modelPath, null, new GuardOptions());
  }

  /** tokenizerPath: tokenizer.json or tokenizer.model (null: the one beside the model). */
  public GuardModule(String modelPath, String tokenizerPath) {
    this(modelPath, tokenizerPath, new GuardOptions());
  }

  public GuardModule(String modelPath, String tokenizerPath, GuardOptions options) {
    if (modelPath == null) throw new GuardException("model path is null");
    handle = nativeCreate(modelPath, (options == null ? new GuardOptions() : options).toJson(tokenizerPath));
  }

  /** Classifies a user prompt. */
  public synchronized Verdict classify(String prompt) {
    return classify(List.of(Message.user(nonNull(prompt))));
  }

  /** Classifies an agent's response to a prompt. */
  public synchronized Verdict classifyResponse(String prompt, String response) {
    return classify(List.of(Message.user(nonNull(prompt)), Message.assistant(nonNull(response))));
  }

  /** Classifies the last turn of a conversation (user/assistant alternating, starting with user). */
  public synchronized Verdict classify(List<Message> conversation) {
    String[][] rt = split(conversation);
    return nativeClassify(live(), rt[0], rt[1]);
  }

  /** The prompt's token ids (policy head + conversation), as the Python guard.format.prompt.encode gives them. */
  public synchronized long[] promptIds(List<Message> conversation) {
    String[][] rt = split(conversation);
    return nativePromptIds(live(), rt[0], rt[1]);
  }

  /** Streaming moderation of a response to {@code conversation}: a check every {@code checkEvery} tokens. */
  public synchronized GuardStream stream(List<Message> conversation, int checkEvery) {
    String[][] rt = split(conversation);
    GuardStream s = new GuardStream(this, nativeStreamOpen(live(), rt[0], rt[1], checkEvery));
    streams.add(s);
    return s;
  }

  synchronized void forget(GuardStream s) {
    streams.remove(s);
  }

  @Override
  public synchronized void close() {
    for (GuardStream s : new java.util.ArrayList<>(streams)) s.close();
    if (handle != 0) nativeDestroy(handle);
    handle = 0;
  }

  synchronized long live() {
    if (handle == 0) throw new GuardException("the GuardModule is closed");
    return handle;
  }

  private static String nonNull(String s) {
    if (s == null) throw new GuardException("text is null");
    return s;
  }

  private static String[][] split(List<Message> conversation) {
    if (conversation == null) throw new GuardException("conversation is null");
    String[][] rt = new String[2][conversation.size()];
    for (int i = 0; i < conversation.size(); i++) {
      Message m = conversation.get(i);
      if (m == null || m.role == null || m.text == null) throw new GuardException("message " + i + ": role or text is null");
      rt[0][i] = m.role;
      rt[1][i] = m.text;
    }
    return rt;
  }

  private static native long nativeCreate(String pte, String optionsJson);
  private static native void nativeDestroy(long handle);
  private static native Verdict nativeClassify(long handle, String[] roles, String[] texts);
  private static native long[] nativePromptIds(long handle, String[] roles, String[] texts);
  private static native long nativeStreamOpen(long handle, String[] roles, String[] texts, int checkEvery);
  static native Verdict nativeStreamFeed(long stream, String chunk);
  static native Verdict nativeStreamClose(long stream);
  static native void nativeStreamFree(long stream);
}
