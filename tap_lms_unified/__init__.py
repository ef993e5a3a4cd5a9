"""Singer tap for the unified LMS APIs of Kombo and Bindbee."""
