-- A member may share a saved LoRA with the server: others can generate with it and download it,
-- never delete or rename it. shared_at is when it was shared (NULL: private); owner_name is the
-- owner's display name when they shared it, shown to the others next to the LoRA.
ALTER TABLE loras ADD COLUMN shared_at REAL;
ALTER TABLE loras ADD COLUMN owner_name TEXT NOT NULL DEFAULT '';
CREATE INDEX loras_shared ON loras (name) WHERE shared_at IS NOT NULL;
