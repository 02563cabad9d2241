//! Due-time math: placeholder until the planning module lands.
