"""Singer tap for unified LMS APIs: the providers are in `providers/`, one module each."""
