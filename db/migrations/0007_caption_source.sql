-- Where each caption came from: the tagger, the member's zip, or an edit by hand (/tags add, remove,
-- replace, a caption typed in its form). A re-tag says how many captions of the member's own it
-- replaces. An undo puts an edit's old source back with its old caption (old_source; NULL: not known).
ALTER TABLE dataset_images ADD COLUMN caption_source TEXT NOT NULL DEFAULT 'tagger'
    CHECK (caption_source IN ('tagger', 'zip', 'hand'));
ALTER TABLE caption_edit_items ADD COLUMN old_source TEXT CHECK (old_source IN ('tagger', 'zip', 'hand'));
-- Before this version a zip's caption was the one stored without the tagger's rating, and every
-- caption an edit in the undo history changed was changed by the member.
UPDATE dataset_images SET caption_source = 'zip' WHERE rating IS NULL;
UPDATE dataset_images SET caption_source = 'hand' WHERE id IN (SELECT image_id FROM caption_edit_items);
