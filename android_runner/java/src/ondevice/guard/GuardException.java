package ondevice.guard;

/** A guard error with a one-line message (bad model, tokenizer, text or options); never a crash. */
public class GuardException extends RuntimeException {
  public GuardException(String message) {
    super(message);
  }
}
