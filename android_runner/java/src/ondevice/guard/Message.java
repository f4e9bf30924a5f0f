package ondevice.guard;

/** One conversation turn: role "user" or "assistant" and its text. */
public final class Message {
  public final String role;
  public final String text;

  public Message(String role, String text) {
    this.role = role;
    this.text = text;
  }

  public static Message user(String text) {
    return new Message("user", text);
  }

  public static Message assistant(String text) {
    return new Message("assistant", text);
  }
}
