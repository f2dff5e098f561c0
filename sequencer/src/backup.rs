//! Backups you can prove (filled in below).
