//! One-time maintenance at start-up: re-normalising the emails stored by an older authd, whose
//! normalisation was only trimming and lowercasing (no NFKC, no IDNA), so that every account is
//! found under today's identity. Accounts that now collide are reported, never merged or deleted.

use super::{AuthService, ServiceError};
use crate::domain::{Email, UserId};

/// The name under which the re-normalisation is recorded once done.
const EMAIL_NORMALIZATION: &str = "email-normalization-nfkc-idna";
/// Users read per round trip.
const PAGE: u32 = 1000;

/// What the re-normalisation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NormalizationReport {
    /// Accounts whose normalised email changed.
    pub updated: u64,
    /// (account kept as it was, account that already holds its new identity): both kept; the
    /// first cannot sign in under its email until someone resolves the pair.
    pub collisions: Vec<(UserId, UserId)>,
    /// Accounts whose stored email no longer parses (left as they were).
    pub unparsable: Vec<UserId>,
}

impl AuthService {
    /// Re-normalises every stored email once (recorded in the user database; `None` when it
    /// had already run). Safe to run on several instances at once.
    pub async fn normalize_stored_emails(
        &self,
    ) -> Result<Option<NormalizationReport>, ServiceError> {
        let users = &self.parts.users;
        if users.maintenance_done(EMAIL_NORMALIZATION).await? {
            return Ok(None);
        }
        let mut report = NormalizationReport::default();
        let mut after = None;
        loop {
            let page = users.users_page(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for stored in page {
                let Ok(email) = Email::parse(&stored.email) else {
                    report.unparsable.push(stored.id);
                    continue;
                };
                if email.normalized() == stored.normalized {
                    continue;
                }
                match users
                    .set_normalized_email(stored.id, email.normalized())
                    .await
                {
                    Ok(()) => report.updated += 1,
                    Err(crate::store::StoreError::EmailTaken) => {
                        let holder = users.find_credentials(&email).await?;
                        if let Some(holder) = holder {
                            report.collisions.push((stored.id, holder.id));
                        }
                    }
                    Err(other) => return Err(other.into()),
                }
            }
        }
        users
            .record_maintenance(EMAIL_NORMALIZATION, self.parts.clock.now_millis())
            .await?;
        Ok(Some(report))
    }
}
