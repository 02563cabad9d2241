//! Templates: placeholder until the template module lands.
