//! Pagination of long tables: which slice of the rows a page shows and the links around it.

/// Where a table is in its rows, and the links to the pages around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    /// The page shown, from 1.
    pub page: usize,
    /// How many pages there are (at least 1).
    pub pages: usize,
    /// How many rows there are in all.
    pub total: usize,
    /// The first row shown, from 1 (0 when there are none).
    pub first: usize,
    /// The last row shown.
    pub last: usize,
    /// The query string of every other parameter (filters), URL-encoded, without `page`.
    pub query: String,
}

impl Pager {
    /// The pager of page `page` (clamped into range) of `total` rows, `per_page` at a time.
    pub fn new(total: usize, page: usize, per_page: usize, query: impl Into<String>) -> Self {
        let per_page = per_page.max(1);
        let pages = total.div_ceil(per_page).max(1);
        let page = page.clamp(1, pages);
        let first = if total == 0 {
            0
        } else {
            (page - 1) * per_page + 1
        };
        let last = (page * per_page).min(total);
        Self {
            page,
            pages,
            total,
            first,
            last,
            query: query.into(),
        }
    }

    /// Whether there is more than one page.
    pub fn needed(&self) -> bool {
        self.pages > 1
    }

    /// The link to the previous page, if any.
    pub fn prev(&self) -> Option<String> {
        (self.page > 1).then(|| self.link(self.page - 1))
    }

    /// The link to the next page, if any.
    pub fn next(&self) -> Option<String> {
        (self.page < self.pages).then(|| self.link(self.page + 1))
    }

    fn link(&self, page: usize) -> String {
        if self.query.is_empty() {
            format!("?page={page}")
        } else {
            format!("?{}&page={page}", self.query)
        }
    }
}

/// The rows of page `page` of `rows`, `per_page` at a time, and its pager.
pub fn paginate<T>(
    rows: Vec<T>,
    page: usize,
    per_page: usize,
    query: impl Into<String>,
) -> (Vec<T>, Pager) {
    let pager = Pager::new(rows.len(), page, per_page, query);
    let start = pager.first.saturating_sub(1);
    let take = pager.last.saturating_sub(start);
    (rows.into_iter().skip(start).take(take).collect(), pager)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case(0, 1, 1, 0, 0 ; "empty")]
    #[test_case(25, 1, 3, 1, 10 ; "first page")]
    #[test_case(25, 3, 3, 21, 25 ; "last page is short")]
    #[test_case(25, 9, 3, 21, 25 ; "past the end clamps")]
    #[test_case(25, 0, 3, 1, 10 ; "page zero clamps")]
    fn ranges(total: usize, page: usize, pages: usize, first: usize, last: usize) {
        let p = Pager::new(total, page, 10, "");
        assert_eq!((p.pages, p.first, p.last), (pages, first, last));
    }

    #[test]
    fn links_keep_the_filters() {
        let p = Pager::new(30, 2, 10, "q=ann&kind=decision.");
        assert_eq!(p.prev().unwrap(), "?q=ann&kind=decision.&page=1");
        assert_eq!(p.next().unwrap(), "?q=ann&kind=decision.&page=3");
        assert!(p.needed());
        let single = Pager::new(3, 1, 10, "");
        assert!(!single.needed());
        assert_eq!(single.prev(), None);
        assert_eq!(single.next(), None);
    }

    #[test]
    fn paginate_slices() {
        let (rows, p) = paginate((1..=25).collect(), 3, 10, "");
        assert_eq!(rows, vec![21, 22, 23, 24, 25]);
        assert_eq!(p.page, 3);
        let (rows, _) = paginate(Vec::<u8>::new(), 1, 10, "");
        assert!(rows.is_empty());
    }
}
