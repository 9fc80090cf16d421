//! A paged pull of one stream: sync:R, a page, the next sync:R, ... until
//! an empty page.
//!
//! Each sync:R names the highest seq the device holds contiguously, and the
//! server takes that as the device's acknowledgement: asking for page `n+1`
//! acknowledges page `n`, so a pull needs no ack:R and costs one round trip
//! per page plus the final empty one. One pull per stream at a time keeps
//! that true (two would race on the stream's cursor); a gap found while a
//! pull runs is left to the pull, which walks past it anyway.
//!
//! The next request is computed from the stream's contiguous mark after the
//! page was taken in, not from the page's last entry: pushes that arrived
//! meanwhile count too, and held messages the page uncovered are skipped.
//! A page answering `after` that starts above `after + 1`, or is empty while
//! the stream's head is above `after`, says the seqs in between are not
//! available to this device (it joined the group later, or retention removed
//! them): the client moves the stream's mark over them (protocol section
//! 5.8, "where history starts"), so a pull always progresses. Should a page
//! still bring nothing past the request (entries at or below `after`, which
//! a correct server never sends), asking again would bring the same page
//! forever, so the pull stops there.

use crate::frame::SyncR;

/// What to do after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageStep {
    /// The page does not answer this pull's outstanding request.
    Unsolicited,
    /// Ask for the next page.
    Next,
    /// An empty page: the pull is over.
    Done,
    /// Entries that did not advance the stream: stop.
    Stalled,
}

/// A pull in progress.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pull {
    /// The `after` of the outstanding sync:R.
    after: u64,
    /// Whether that request went out on the current connection (false:
    /// send it after the next login).
    sent: bool,
}

impl Pull {
    /// The sync:R asking for the entries after `contiguous`; the pull now
    /// waits for its page.
    pub(crate) fn request(&mut self, group: u64, contiguous: u64, limit: u16) -> SyncR {
        self.after = contiguous;
        self.sent = true;
        SyncR {
            group,
            after: contiguous,
            limit,
        }
    }

    /// The connection closed: the outstanding request is lost.
    pub(crate) fn interrupt(&mut self) {
        self.sent = false;
    }

    /// Whether a page for `after` answers the outstanding request.
    pub(crate) fn answers(&self, after: u64) -> bool {
        self.sent && after == self.after
    }

    /// Whether a request is outstanding on the current connection.
    pub(crate) fn is_sent(&self) -> bool {
        self.sent
    }

    /// Decides what follows a page answering `after` with `count` entries,
    /// the stream being contiguous up to `contiguous` once they were taken.
    pub(crate) fn on_page(&self, after: u64, count: u16, contiguous: u64) -> PageStep {
        if !self.answers(after) {
            PageStep::Unsolicited
        } else if count == 0 {
            PageStep::Done
        } else if contiguous > self.after {
            PageStep::Next
        } else {
            PageStep::Stalled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let mut p = Pull::default();
        assert_eq!(p.on_page(0, 3, 3), PageStep::Unsolicited);
        assert_eq!(
            p.request(5, 10, 50),
            SyncR {
                group: 5,
                after: 10,
                limit: 50
            }
        );
        assert_eq!(p.on_page(9, 3, 12), PageStep::Unsolicited);
        assert_eq!(p.on_page(10, 3, 13), PageStep::Next);
        assert_eq!(p.on_page(10, 3, 10), PageStep::Stalled);
        assert_eq!(p.on_page(10, 0, 10), PageStep::Done);
        p.interrupt();
        assert!(!p.is_sent());
        assert_eq!(p.on_page(10, 0, 10), PageStep::Unsolicited);
    }
}
